r"""Each kernel path's error against its float64 naive reference, by input dtype and matmul precision.

  python benchmarks/precision.py            # n = 512, batch 1, 2 heads, d = 64
  python benchmarks/precision.py --quick    # n = 64: a smoke run

For every (kind, causal, implementation) in the kernel table, the output's and
the input gradients' max-norm relative error, max|got - ref| / max|ref|,
against attention/naive.py in float64 on the same (rounded) inputs, for:
bf16 inputs (bf16 matmul operands, float32 sums), float32 at the backend's
default matmul precision (TF32 on GPUs, bf16 passes on TPUs, float32 on CPU),
and float32 at precision HIGHEST. Keys are standard normal. Writes
<out>/<device>.json and .md (default benchmarks/results/precision/, --quick
benchmarks/quick/precision/). Needs only jax and linformer_jax.
"""
import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import linformer_jax as lj  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = {'bf16 inputs': (jnp.bfloat16, None), 'float32, default precision': (jnp.float32, None),
            'float32, HIGHEST': (jnp.float32, lax.Precision.HIGHEST)}


def paths():
  for name, kind in lj.TABLE.items():
    for causal in (False, True):
      if causal and kind.causal is None:
        continue
      for impl in (kind.causal_implementations if causal else kind.implementations) or (None,):
        yield name, causal, impl


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def measure(n, heads, d, seed=0):
  rng = np.random.default_rng(seed)
  q, k, v, cot = (rng.normal(size=(1, n, heads, d)) for _ in range(4))
  e, f = rng.normal(size=(2, 64, n)) / 8
  rows = []
  for kind, causal, impl in paths():
    record = lj.TABLE[kind]
    proj = (e, f) if record.needs_projections else None
    row = {'kind': kind, 'causal': causal, 'implementation': impl or 'default'}
    for setting, (dtype, precision) in SETTINGS.items():
      x = tuple(jnp.asarray(a, dtype) for a in (q, k, v))
      p = None if proj is None else tuple(jnp.asarray(a, dtype) for a in proj)

      def run(q, k, v):
        return lj.attend(kind, q, k, v, causal=causal, projections=p, implementation=impl,
                         precision=precision)
      out, vjp = jax.vjp(run, *x)
      grads = vjp(jnp.asarray(cot, dtype))
      with jax.enable_x64(True):
        f64 = lambda a: jnp.asarray(a, jnp.float64)
        ref = lambda q, k, v: record.naive(q, k, v, None, causal, *(
            [] if p is None else [tuple(map(f64, p))]))
        want, ref_vjp = jax.vjp(ref, *map(f64, x))
        want_grads = ref_vjp(f64(cot))
      row[setting] = {'out': _rel(out, want),
                      'grad': max(_rel(g, w) for g, w in zip(grads, want_grads))}
    rows.append(row)
  return rows


def markdown(rows, meta):
  lines = [f"Max-norm relative error against float64 ({meta['device']}, JAX {meta['jax']}, "
           f"n = {meta['n']}, {meta['heads']} heads, d = {meta['d']}); output / input gradients.", '',
           '| kind | causal | implementation | ' + ' | '.join(SETTINGS) + ' |',
           '|---|---|---|' + '---|' * len(SETTINGS)]
  for r in rows:
    cells = [f"{r[s]['out']:.1e} / {r[s]['grad']:.1e}" for s in SETTINGS]
    lines.append(f"| {r['kind']} | {'yes' if r['causal'] else 'no'} | {r['implementation']} | "
                 + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--n', type=int, default=512)
  parser.add_argument('--heads', type=int, default=2)
  parser.add_argument('--d', type=int, default=64)
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  n = 64 if args.quick else args.n
  here = os.path.dirname(os.path.abspath(__file__))
  out = args.out or os.path.join(here, 'quick' if args.quick else 'results', 'precision')
  device = jax.devices()[0]
  meta = {'device': getattr(device, 'device_kind', device.platform), 'platform': device.platform,
          'jax': jax.__version__, 'n': n, 'heads': args.heads, 'd': args.d}
  rows = measure(n, args.heads, args.d)
  os.makedirs(out, exist_ok=True)
  name = meta['device'].replace(' ', '_').replace('/', '_')
  with open(os.path.join(out, f'{name}.json'), 'w') as f:
    json.dump({'meta': meta, 'rows': rows}, f, indent=1)
  table = markdown(rows, meta)
  with open(os.path.join(out, f'{name}.md'), 'w') as f:
    f.write(table)
  print(table)


if __name__ == '__main__':
  main()
