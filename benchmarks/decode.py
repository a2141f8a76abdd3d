r"""Per-token generation latency and decoding-state memory against context length.

  python benchmarks/decode.py            # contexts 1k .. 64k (linear kinds to 1M)
  python benchmarks/decode.py --quick    # smoke run: contexts 256 and 1024

For each kind (linear, elu_linear, softmax with a KV cache) and context length
L, one fresh process builds the state after L tokens with `causal_state`
(prefill), jits `decode_step` with the state donated, takes --warmup steps,
then times --steps single steps (each blocked on) and reports median and minimum. The
state's memory is the bytes of its arrays. Batch 1, 8 heads, head_dim 64,
float32. Outputs (--out, default benchmarks/results/decode[_quick]/):
decode.json, decode.md, decode.png.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

# The kinds with a recurrent decoder, from the kernel table.
from linformer_jax.attention import DECODE_KINDS as KINDS, TABLE  # pylint: disable=g-import-not-at-top,wrong-import-position


def _worker(spec):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import linformer_jax as lj  # pylint: disable=g-import-not-at-top
  kind, ctx, b, h, d = spec['kind'], spec['context'], spec['batch'], spec['heads'], spec['head_dim']
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  k, v = (jax.random.normal(key, (b, ctx, h, d)) for key in keys[:2])
  total = spec['warmup'] + spec['steps']
  state = lj.causal_state(kind, k, v, max_len=ctx + total if TABLE[kind].bounded_context else None)
  del k, v
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  q, k, v = (jax.random.normal(key, (total, b, h, d)) for key in keys[2:])
  step = jax.jit(lambda state, q, k, v: lj.decode_step(kind, state, q, k, v), donate_argnums=0)
  tic = time.perf_counter()
  step = step.lower(state, q[0], k[0], v[0]).compile()
  compile_s = time.perf_counter() - tic
  times = []
  for i in range(total):
    tic = time.perf_counter()
    out, state = step(state, q[i], k[i], v[i])
    jax.block_until_ready(out)
    if i >= spec['warmup']:
      times.append(time.perf_counter() - tic)
  return {'status': 'ok', 'device': harness.device_info(), 'median_s': harness.median(times),
          'min_s': min(times), 'steps': len(times), 'compile_s': compile_s,
          'state_bytes': state_bytes, 'finite': bool(jnp.isfinite(out).all()),
          'peak_rss_bytes': harness.peak_rss()}


def markdown(report):
  res = report['results']
  ctxs = sorted({r['context'] for r in res})
  lines = ['# Recurrent decoding: per-token latency and state memory against context', '',
           f"Machine: {harness.machine_line(report['host'], report['device'])}; load at end "
           f"{report['load_average_end']}.", '',
           f"Batch {report['settings']['batch']}, {report['settings']['heads']} heads, head_dim "
           f"{report['settings']['head_dim']}, float32 state; median and minimum of {report['settings']['steps']} "
           f"jitted decode_step calls after {report['settings']['warmup']} warm-up steps, state donated.", '']

  def table(field, scale, title):
    rows = []
    for kind in KINDS:
      row = [kind]
      for ctx in ctxs:
        r = next((r for r in res if r['kind'] == kind and r['context'] == ctx), None)
        row.append('' if r is None else harness.fmt(r[field] * scale) if r['status'] == 'ok' else 'skip')
      rows.append(row)
    return [f'## {title}', '', harness.markdown_table(['kind'] + [f'L={c}' for c in ctxs], rows), '']

  lines += table('median_s', 1e3, 'Per-token latency, median (ms)')
  lines += table('min_s', 1e3, 'Per-token latency, minimum (ms)')
  lines += table('state_bytes', 1 / harness.MiB, 'State / KV cache (MiB)')
  lines += ['## Targets', '', harness.markdown_table(
      ['target', 'measured', 'met'],
      [[t['target'], harness.fmt(t['value']), {True: 'yes', False: 'no', None: 'n/a'}[t['met']]]
       for t in report['targets']])]
  return '\n'.join(lines)


def targets(res):
  # On minimum times: the same work at every context for the linear kinds, so the
  # steady-state floor, which load from other jobs cannot raise.
  def ok(kind, ctx):
    return next((r for r in res if r['kind'] == kind and r['context'] == ctx and r['status'] == 'ok'), None)
  out = []
  small, big = ok('linear', 1024), ok('linear', 65536)
  value = big['min_s'] / small['min_s'] if small and big else None
  out.append({'target': 'linear per-token latency (min) at 64k within 1.2x of 1k', 'value': value,
              'met': None if value is None else value <= 1.2})
  small, big = ok('softmax', 1024), ok('softmax', 65536)
  value = big['min_s'] / small['min_s'] if small and big else None
  out.append({'target': 'softmax per-token latency (min) grows from 1k to 64k (ratio > 1)', 'value': value,
              'met': None if value is None else value > 1})
  return out


def figure(report):
  plt = harness.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout='constrained')
  for ax, field, scale, title in ((axes[0], 'median_s', 1e3, 'per-token latency (ms)'),
                                  (axes[1], 'state_bytes', 1 / harness.MiB, 'state memory (MiB)')):
    for kind in KINDS:
      pts = sorted((r['context'], r[field] * scale) for r in report['results']
                   if r['kind'] == kind and r['status'] == 'ok')
      if pts:
        ax.plot(*zip(*pts), marker='o', label=kind)
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('context length')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
  axes[0].legend()
  return fig


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='smoke run: contexts 256 and 1024')
  p.add_argument('--out', help='results folder (default benchmarks/results/decode[_quick])')
  p.add_argument('--worker', help=argparse.SUPPRESS)
  p.add_argument('--contexts', default='1024,4096,16384,65536', help='context lengths, every kind')
  p.add_argument('--contexts_linear', default='262144,1048576', help='further, linear kinds only')
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument('--warmup', type=int, default=5)
  p.add_argument('--steps', type=int, default=50)
  args = p.parse_args(argv)
  if args.quick:
    args.contexts, args.contexts_linear, args.warmup, args.steps = '256,1024', '', 2, 5
  return args


def main(argv):
  args = parse_args(argv)
  if args.worker:
    harness.emit(_worker(json.loads(args.worker)))
    return
  script = os.path.abspath(__file__)
  settings = dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, warmup=args.warmup,
                  steps=args.steps)
  plan = [(kind, int(c)) for c in args.contexts.split(',') for kind in KINDS]
  plan += [(kind, int(c)) for c in args.contexts_linear.split(",") if c
           for kind in KINDS if not TABLE[kind].bounded_context]
  host, tic, results = harness.host_info(), time.time(), []
  for kind, ctx in plan:
    spec = dict(settings, kind=kind, context=ctx)
    result = dict(harness.run_worker(script, spec, 600, env=harness.quick_env() if args.quick else None),
                  kind=kind, context=ctx)
    print(kind, ctx, result['status'], harness.fmt(result.get('median_s', 0) * 1e3), 'ms',
          result.get('reason', ''), flush=True)
    results.append(result)
  device = next((r.pop('device') for r in results if 'device' in r), {})
  for r in results:
    r.pop('device', None)
  report = {'benchmark': 'decode', 'run': 'quick' if args.quick else 'full',
            'command': 'python benchmarks/decode.py ' + ' '.join(argv), 'host': host, 'device': device,
            'settings': settings, 'results': results, 'targets': targets(results),
            'elapsed_s': round(time.time() - tic, 1), 'load_average_end': harness.load_average()}
  paths = harness.write_outputs(args.out or harness.default_out('decode', args.quick), 'decode', report,
                                markdown(report), figure(report))
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
