r"""Where linear_attention's time goes at large n, and which rewrites would make it faster.

  python benchmarks/linear_variants.py            # n = 65536, b = 1, h = 8, d = 64
  python benchmarks/linear_variants.py --quick    # n = 4096, to check the script runs

One process, calls interleaved round-robin (so a load change on a shared
machine hits every variant alike), median over rounds. Reports:
  * the pieces of the non-causal kernel on their own (softmax over features,
    exp over the sequence, the two contractions in the kernel's [b, n, h, d]
    layout and head-major [b, h, n, d], and the transposes between them);
  * whole-kernel rewrites, with their largest difference from the current
    kernel (forward and the gradient of sum(out) w.r.t. q, k, v);
  * the causal kernel against chunk_size.
Outputs (--out, default benchmarks/results/linear_variants[_quick]/):
linear_variants.json, .md and .png.
"""
import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax import lax  # pylint: disable=g-import-not-at-top,wrong-import-position

from linformer_jax import attention  # pylint: disable=g-import-not-at-top,wrong-import-position


# ----------------------------------------------------------------------------- rewrites
# Each mirrors the kernel in attention.py line by line (upcast, masking, stop_gradient),
# changing only where the arrays are laid out or how the contractions are written, so
# that any one can replace the kernel's body as it stands.

_NEG = attention._NEG  # pylint: disable=protected-access


_heads_first = attention._heads_first  # pylint: disable=protected-access


def _linear(query, key, value, key_mask=None, *, kv_layout='bnhd', out_layout='bnhd',
            precision=None):
  """Non-causal linear_attention; each contraction in the kernel's [b, n, h, d]
  layout or head-major [b, h, n, d] (inputs transposed, fused by XLA into the
  exp / softmax that produce them)."""
  q, k, v = attention._upcast(query, key, value)  # pylint: disable=protected-access
  qs = jax.nn.softmax(q, axis=-1)
  mask = attention._mask_as(key_mask, k)  # pylint: disable=protected-access
  k = jnp.where(mask > 0, k, _NEG)
  m = lax.stop_gradient(jnp.max(k, axis=1, keepdims=True))
  e = mask * jnp.exp(k - m)
  z = jnp.sum(e, axis=1)
  if kv_layout == 'bhnd':
    kv = jnp.einsum('bhnd,bhne->bhde', _heads_first(e), _heads_first(v), precision=precision)
  else:
    kv = jnp.einsum('bnhd,bnhe->bhde', e, v, precision=precision)
  kv = kv / jnp.where(z > 0, z, 1.0)[..., None]
  if out_layout == 'bhnd':
    out = _heads_first(jnp.einsum('bhnd,bhde->bhne', _heads_first(qs), kv, precision=precision))
  else:
    out = jnp.einsum('bnhd,bhde->bnhe', qs, kv, precision=precision)
  return out.astype(query.dtype)


def _elu(query, key, value, key_mask=None, *, layout='bnhd', ones_column=True):
  """Non-causal elu_linear_attention; optionally head-major, and optionally with
  the denominator as its own contraction instead of a ones column appended to V
  (which makes the value width 65 instead of 64)."""
  q, k, v = attention._upcast(query, key, value)  # pylint: disable=protected-access
  phi_q = jax.nn.elu(q) + 1.0
  phi_k = (jax.nn.elu(k) + 1.0) * attention._mask_as(key_mask, k)  # pylint: disable=protected-access
  if layout == 'bhnd':
    phi_q, phi_k, v = _heads_first(phi_q), _heads_first(phi_k), _heads_first(v)
    spec_kv, spec_out, spec_den, axis = 'bhnd,bhne->bhde', 'bhnd,bhde->bhne', 'bhnd,bhd->bhn', 2
  else:
    spec_kv, spec_out, spec_den, axis = 'bnhd,bnhe->bhde', 'bnhd,bhde->bnhe', 'bnhd,bhd->bnh', 1
  if ones_column:
    v1 = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)
    num = jnp.einsum(spec_out, phi_q, jnp.einsum(spec_kv, phi_k, v1))
    num, den = num[..., :-1], num[..., -1:]
  else:
    num = jnp.einsum(spec_out, phi_q, jnp.einsum(spec_kv, phi_k, v))
    den = jnp.einsum(spec_den, phi_q, jnp.sum(phi_k, axis=axis))[..., None]
  out = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
  if layout == 'bhnd':
    out = _heads_first(out)
  return out.astype(query.dtype)


LINEAR_REWRITES = {
    'current (attention.linear_attention)': jax.jit(attention.linear_attention),
    'both contractions head-major': jax.jit(functools.partial(_linear, kv_layout='bhnd', out_layout='bhnd')),
    'only Kᵀ·V head-major': jax.jit(functools.partial(_linear, kv_layout='bhnd')),
    'only Q·(KᵀV) head-major': jax.jit(functools.partial(_linear, out_layout='bhnd')),
    'kernel layout, precision=HIGHEST': jax.jit(functools.partial(_linear, precision=lax.Precision.HIGHEST)),
}
ELU_REWRITES = {
    'current (attention.elu_linear_attention)': jax.jit(attention.elu_linear_attention),
    'head-major': jax.jit(functools.partial(_elu, layout='bhnd')),
    'separate denominator': jax.jit(functools.partial(_elu, ones_column=False)),
    'head-major + separate denominator': jax.jit(functools.partial(_elu, layout='bhnd', ones_column=False)),
}


def pieces(q, k, v):
  """Each stage of the non-causal kernel as its own jitted function, with its inputs."""
  kv = jnp.ones(q.shape[:1] + q.shape[2:] + q.shape[-1:], q.dtype)  # [b, h, d, e]
  qt, kt, vt = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  return {
      'softmax over features (q)': (jax.jit(lambda q: jax.nn.softmax(q, axis=-1)), (q,)),
      'exp(k - max over n)': (jax.jit(lambda k: jnp.exp(k - jnp.max(k, axis=1, keepdims=True))), (k,)),
      'Kᵀ·V, [b,n,h,d] layout': (jax.jit(lambda k, v: jnp.einsum('bnhd,bnhe->bhde', k, v)), (k, v)),
      'Kᵀ·V, [b,h,n,d] layout': (jax.jit(lambda k, v: jnp.einsum('bhnd,bhne->bhde', k, v)), (kt, vt)),
      'Q·(KᵀV), [b,n,h,d] layout': (jax.jit(lambda q, kv: jnp.einsum('bnhd,bhde->bnhe', q, kv)), (q, kv)),
      'Q·(KᵀV), [b,h,n,d] layout': (jax.jit(lambda q, kv: jnp.einsum('bhnd,bhde->bhne', q, kv)), (qt, kv)),
      'transpose [b,n,h,d] -> [b,h,n,d] (one array)': (jax.jit(lambda q: q.transpose(0, 2, 1, 3)), (q,)),
  }


def piece_flops(name, b, n, h, d):
  return 2 * b * h * n * d * d if 'K' in name else None


# ----------------------------------------------------------------------------- timing


def interleaved(fns, rounds, budget_s):
  """{name: median seconds} of zero-argument blocking functions, called round-robin."""
  for fn in fns.values():
    fn()  # compile and warm up
  times = {name: [] for name in fns}
  start = time.perf_counter()
  for r in range(rounds):
    for name, fn in fns.items():
      tic = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - tic)
    if time.perf_counter() - start > budget_s and r >= 2:
      break
  return {name: harness.median(ts) for name, ts in times.items()}, {n: len(t) for n, t in times.items()}


def matmul_gflops(size, rounds):
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
  mm = jax.jit(jnp.matmul)
  t, _ = interleaved({'mm': lambda: mm(a, a).block_until_ready()}, rounds, 60)
  return 2 * size ** 3 / t['mm'] / 1e9


def max_diff(fn, ref, q, k, v):
  """Largest |difference| of the outputs and of the gradients of sum(out) w.r.t. q, k, v."""
  grad = lambda f: jax.jit(jax.grad(lambda q, k, v: f(q, k, v).sum(), argnums=(0, 1, 2)))
  out = float(jnp.max(jnp.abs(fn(q, k, v) - ref(q, k, v))))
  grads = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(grad(fn)(q, k, v), grad(ref)(q, k, v))]
  return out, max(grads)


# ----------------------------------------------------------------------------- main


def main(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true')
  p.add_argument('--out')
  p.add_argument('--n', type=int, default=65536)
  p.add_argument('--causal_n', type=int, default=65536)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument('--rounds', type=int, default=9)
  p.add_argument('--chunks', default='32,64,128,256')
  args = p.parse_args(argv)
  if args.quick:
    args.n, args.causal_n, args.rounds, args.chunks = 4096, 4096, 3, '32,64'
  b, n, h, d = 1, args.n, args.heads, args.head_dim
  host, tic = harness.host_info(), time.time()
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q, k, v = (jax.random.normal(key, (b, n, h, d)) for key in keys)
  mm = matmul_gflops(4096 if not args.quick else 1024, args.rounds)
  print(f'matmul {mm:.1f} GFLOP/s', flush=True)

  fns = {name: (lambda f=f, a=a: jax.block_until_ready(f(*a))) for name, (f, a) in pieces(q, k, v).items()}
  piece_t, _ = interleaved(fns, args.rounds, 120)
  attention_flops = 4 * b * h * n * d * d
  mask = jax.random.uniform(jax.random.PRNGKey(3), (b, n)) > 0.2
  rewrite_rows = []
  for family, rewrites in (('linear', LINEAR_REWRITES), ('elu_linear', ELU_REWRITES)):
    fns = {name: (lambda f=f: jax.block_until_ready(f(q, k, v))) for name, f in rewrites.items()}
    times, runs = interleaved(fns, args.rounds, 240)
    grads = {name: jax.jit(jax.grad(lambda q, k, v, f=f: f(q, k, v).sum(), argnums=(0, 1, 2)))
             for name, f in rewrites.items()}
    grad_times, _ = interleaved({name: (lambda g=g: jax.block_until_ready(g(q, k, v)))
                                 for name, g in grads.items()}, args.rounds, 240)
    ref_name = next(iter(rewrites))
    fl = attention_flops if family == 'linear' else 4 * b * h * n * d * (d + 1)
    for name, f in rewrites.items():
      rewrite_rows.append({
          'family': family, 'rewrite': name, 'median_s': times[name], 'runs': runs[name],
          'gflops': fl / times[name] / 1e9, 'fraction_of_matmul': fl / times[name] / 1e9 / mm,
          'speedup': times[ref_name] / times[name], 'fwd_bwd_s': grad_times[name],
          'fwd_bwd_speedup': grad_times[ref_name] / grad_times[name],
          'max_abs_diff': max_diff(f, rewrites[ref_name], q, k, v),
          'max_abs_diff_masked': max_diff(functools.partial(f, key_mask=mask),
                                          functools.partial(rewrites[ref_name], key_mask=mask), q, k, v)})
      print(rewrite_rows[-1], flush=True)
  current_s = rewrite_rows[0]['median_s']

  chunks = [int(c) for c in args.chunks.split(',')]
  qc, kc, vc = (x[:, :args.causal_n] if args.causal_n <= n else
                jax.random.normal(key, (b, args.causal_n, h, d)) for x, key in zip((q, k, v), keys))
  causal = {c: jax.jit(functools.partial(attention.linear_attention, causal=True, chunk_size=c))
            for c in chunks}
  causal_t, _ = interleaved({c: (lambda f=f: jax.block_until_ready(f(qc, kc, vc)))
                             for c, f in causal.items()}, args.rounds, 180)
  causal_rows = []
  for c in chunks:
    fl = 4 * b * h * args.causal_n * (d * d + c * d)
    causal_rows.append({'chunk_size': c, 'median_s': causal_t[c], 'gflops': fl / causal_t[c] / 1e9,
                        'vs_non_causal': causal_t[c] / current_s if args.causal_n == n else None})

  report = {
      'benchmark': 'linear_variants', 'run': 'quick' if args.quick else 'full',
      'command': 'python benchmarks/linear_variants.py ' + ' '.join(argv), 'host': host,
      'device': harness.device_info(), 'shape': dict(batch=b, n=n, heads=h, head_dim=d),
      'matmul_gflops': mm,
      'pieces': [{'piece': name, 'median_s': t,
                  'gflops': piece_flops(name, b, n, h, d) / t / 1e9 if piece_flops(name, b, n, h, d) else None}
                 for name, t in piece_t.items()],
      'rewrites': rewrite_rows,
      'causal': causal_rows, 'causal_n': args.causal_n,
      'elapsed_s': round(time.time() - tic, 1), 'load_average_end': harness.load_average(),
  }
  md = '\n'.join([
      f"# linear_attention at n={n}: pieces, rewrites, causal chunk size ({report['run']})", '',
      f"Machine: {harness.machine_line(host, report['device'])}; load at end {report['load_average_end']}.",
      f'Shape b={b}, h={h}, d={d}, float32. f32 matmul: {mm:.1f} GFLOP/s. Medians over interleaved rounds.', '',
      '## Pieces of the non-causal forward', '', harness.markdown_table(
          ['piece', 'ms', 'GFLOP/s'],
          [[r['piece'], harness.fmt(r['median_s'] * 1e3), harness.fmt(r['gflops'])] for r in report['pieces']]),
      '', '## Whole-kernel rewrites', '',
      'Speedups against the current kernel of the same family; max |Δ| is the largest '
      'difference from it in the output / in the gradients of sum(out), without and with a '
      'random key mask (20% padding).', '', harness.markdown_table(
          ['kernel', 'rewrite', 'fwd ms', 'GFLOP/s', 'of matmul', 'fwd speedup', 'fwd+bwd ms',
           'fwd+bwd speedup', 'max |Δ| out, grad', 'masked'],
          [[r['family'], r['rewrite'], harness.fmt(r['median_s'] * 1e3), harness.fmt(r['gflops']),
            f"{r['fraction_of_matmul']:.0%}", harness.fmt(r['speedup']),
            harness.fmt(r['fwd_bwd_s'] * 1e3), harness.fmt(r['fwd_bwd_speedup']),
            '{:.1g}, {:.1g}'.format(*r['max_abs_diff']), '{:.1g}, {:.1g}'.format(*r['max_abs_diff_masked'])]
           for r in report['rewrites']]),
      '', f'## Causal linear_attention at n={args.causal_n} against chunk_size', '', harness.markdown_table(
          ['chunk_size', 'fwd ms', 'GFLOP/s', 'x non-causal'],
          [[r['chunk_size'], harness.fmt(r['median_s'] * 1e3), harness.fmt(r['gflops']),
            harness.fmt(r['vs_non_causal'])] for r in causal_rows])])
  plt = harness.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(13, 4), layout='constrained')
  axes[0].barh([r['piece'] for r in report['pieces']], [r['median_s'] * 1e3 for r in report['pieces']])
  axes[0].set_xlabel('ms')
  axes[0].set_title(f'pieces of the non-causal forward, n={n}')
  axes[1].plot(chunks, [r['median_s'] * 1e3 for r in causal_rows], marker='o')
  axes[1].set_xscale('log', base=2)
  axes[1].set_xlabel('chunk_size')
  axes[1].set_ylabel('ms')
  axes[1].set_title(f'causal forward, n={args.causal_n}')
  paths = harness.write_outputs(args.out or harness.default_out('linear_variants', args.quick),
                                'linear_variants', report, md, fig)
  print(md)
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
