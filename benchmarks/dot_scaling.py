r"""Do linear_attention's contractions use every core? GFLOP/s on one core and on all.

  python benchmarks/dot_scaling.py            # n = 65536, 8 heads, head_dim 64
  python benchmarks/dot_scaling.py --quick    # n = 4096, to check the script runs

Each core count runs in a fresh process pinned with sched_setaffinity before JAX
starts (XLA sizes its thread pool from the affinity mask). Timed, as medians
after a warm-up call: a square f32 matmul (the reference of benchmarks/kernels.py),
the two head-major contractions of the non-causal kernel, Kᵀ·V [b,h,n,d]x[b,h,n,e]
and Q·(KᵀV) [b,h,n,d]x[b,h,d,e], and the whole linear_attention forward. If a
contraction is no faster on all cores than on one, it runs on one thread, and
the machine's matmul rate is out of its reach. Linux only (sched_setaffinity).
Outputs (--out, default benchmarks/results/dot_scaling[_quick]/): .json, .md, .png.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position


def worker(spec):
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:spec['cores']]))
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from linformer_jax import attention  # pylint: disable=g-import-not-at-top
  b, n, h, d, size = 1, spec['n'], spec['heads'], spec['head_dim'], spec['matmul_size']
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q, k, v = (jax.random.normal(key, (b, n, h, d)) for key in keys)
  qt, kt, vt = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  kv = jnp.ones((b, h, d, d))
  a = jax.random.normal(keys[0], (size, size))
  ops = {  # name: (function, arguments, FLOPs)
      f'matmul {size}x{size}': (jax.jit(jnp.matmul), (a, a), 2 * size ** 3),
      'Kᵀ·V (bhnd,bhne->bhde)': (jax.jit(lambda k, v: jnp.einsum('bhnd,bhne->bhde', k, v)),
                                 (kt, vt), 2 * b * h * n * d * d),
      'Q·(KᵀV) (bhnd,bhde->bhne)': (jax.jit(lambda q, kv: jnp.einsum('bhnd,bhde->bhne', q, kv)),
                                    (qt, kv), 2 * b * h * n * d * d),
      'linear_attention forward': (attention.linear_attention, (q, k, v), 4 * b * h * n * d * d),
  }
  rows = []
  for name, (fn, args, flops) in ops.items():
    times, _ = harness.timed_runs(lambda fn=fn, args=args: jax.block_until_ready(fn(*args)),
                                  reps=spec['reps'], budget_s=30, max_warmup_s=60)
    t = harness.median(times)
    rows.append({'op': name, 'median_s': t, 'runs': len(times), 'gflops': flops / t / 1e9})
  harness.emit({'status': 'ok', 'cores': len(os.sched_getaffinity(0)), 'rows': rows,
                'device': harness.device_info()})


def main(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true')
  p.add_argument('--out')
  p.add_argument('--worker', help=argparse.SUPPRESS)
  p.add_argument('--n', type=int, default=65536)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument('--reps', type=int, default=7)
  args = p.parse_args(argv)
  if args.worker:
    return worker(json.loads(args.worker))
  if args.quick:
    args.n, args.reps = 4096, 3
  host = harness.host_info()
  all_cores = len(os.sched_getaffinity(0))
  spec = dict(n=args.n, heads=args.heads, head_dim=args.head_dim, reps=args.reps,
              matmul_size=1024 if args.quick else 4096)
  runs = {}
  for cores in sorted({1, all_cores}):
    runs[cores] = harness.run_worker(os.path.abspath(__file__), dict(spec, cores=cores), timeout_s=900,
                                     env=harness.quick_env() if args.quick else None)
    if runs[cores]['status'] != 'ok':
      sys.exit(f'worker on {cores} core(s) failed: {runs[cores]["reason"]}')
  one, full = runs[1], runs[all_cores]
  rows = [{'op': a['op'], 'gflops_1_core': a['gflops'], f'gflops_{all_cores}_cores': b['gflops'],
           'scaling': b['gflops'] / a['gflops']} for a, b in zip(one['rows'], full['rows'])]
  report = {'benchmark': 'dot_scaling', 'run': 'quick' if args.quick else 'full',
            'command': 'python benchmarks/dot_scaling.py ' + ' '.join(argv), 'host': host,
            'device': full['device'], 'shape': dict(batch=1, n=args.n, heads=args.heads, head_dim=args.head_dim),
            'rows': rows, 'workers': runs, 'load_average_end': harness.load_average()}
  md = '\n'.join([
      f"# GFLOP/s on 1 core and on {all_cores} ({report['run']})", '',
      f"Machine: {harness.machine_line(host, report['device'])}; load at end {report['load_average_end']}.",
      f'Shape b=1, n={args.n}, h={args.heads}, d={args.head_dim}, float32; median of up to {args.reps} '
      'calls after a warm-up call, one pinned process per core count.', '',
      harness.markdown_table(['op', 'GFLOP/s, 1 core', f'GFLOP/s, {all_cores} cores', 'scaling'],
                             [[r['op'], harness.fmt(r['gflops_1_core']),
                               harness.fmt(r[f'gflops_{all_cores}_cores']), harness.fmt(r['scaling'])]
                              for r in rows])])
  plt = harness.pyplot()
  fig, ax = plt.subplots(figsize=(8, 3.5), layout='constrained')
  ys = range(len(rows))
  ax.barh([y + 0.2 for y in ys], [r['gflops_1_core'] for r in rows], height=0.4, label='1 core')
  ax.barh([y - 0.2 for y in ys], [r[f'gflops_{all_cores}_cores'] for r in rows], height=0.4,
          label=f'{all_cores} cores')
  ax.set_yticks(list(ys), [r['op'] for r in rows])
  ax.set_xlabel('GFLOP/s')
  ax.legend()
  paths = harness.write_outputs(args.out or harness.default_out('dot_scaling', args.quick),
                                'dot_scaling', report, md, fig)
  print(md)
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
