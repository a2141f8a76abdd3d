r"""Kernel speed and memory against sequence length n, every attention side by side.

  python benchmarks/kernels.py            # full: n = 512 .. 65536, linear kernels further
  python benchmarks/kernels.py --quick    # smoke run: n in {256, 1024}, few repetitions
  python benchmarks/kernels.py --causal_ratio --ns 4096,65536   # causal vs non-causal only

Each (kernel, mode, n) runs in a fresh process: compile, one warm-up call, then
timed calls (median reported), and the process's peak RSS (on accelerators the
device's peak bytes in use) is its memory. Sizes whose estimated memory exceeds
70% of what is available, or whose predicted time exceeds --max_run_s, are
recorded as skipped; workers that crash, time out or get killed as failed.
Outputs (--out, default benchmarks/results/kernels/, --quick benchmarks/quick/kernels/):
kernels.json, kernels.md, kernels.png.

--causal_ratio times the causal kernels against their non-causal forms side by
side: one fresh process per n compiles every variant, then runs --reps rounds
that call each once in turn, so load from other jobs hits all alike; it reports
the minimum and median per variant (causal_ratio.json/.md in
results/kernels_causal_ratio/). `linear_causal_parallel` forces the
chunk-parallel form that linear_causal uses off CPU.
"""
import argparse
import concurrent.futures
import json
import math
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

QUADRATIC = ('softmax', 'dpa_xla', 'dpa_cudnn')
LINEAR_FAMILY = ('linear', 'linear_causal', 'elu_linear', 'elu_linear_causal')
MODES = ('fwd', 'fwd_bwd')

# Matmul FLOPs (2 per multiply-add) of one forward call, per kernel; b batch, n
# length, h heads, d head dim (= value dim), C causal chunk, k Linformer rows.
# Elementwise work (exp, softmax normalisation) is not counted. Forward+backward
# counts 3x the forward (each matmul has two gradient matmuls); the causal scans
# rematerialise their forward in the backward pass, which is not counted.
FLOP_FORMULAS = {
    'softmax': '4·b·h·n²·d  (Q·Kᵀ and P·V)',
    'dpa_xla': '4·b·h·n²·d',
    'dpa_cudnn': '4·b·h·n²·d',
    'linformer_k{k}': '4·b·h·k·n·d + 4·b·h·n·k·d  (E·K and F·V, then attention to k rows)',
    'linear': '4·b·h·n·d²  (Kᵀ·V, then Q·(KᵀV))',
    'elu_linear': '4·b·h·n·d·(d+1)  (V carries a ones column for the denominator)',
    'linear_causal': '4·b·h·n·(d² + C·d)  (per chunk: two C×C×d and two C×d×d matmuls)',
    'elu_linear_causal': '2·b·h·n·(C·d + C·(d+1) + 2·d·(d+1))',
}


def linformer_k(kernel):
  return int(kernel.split('_k')[1]) if kernel.startswith('linformer_k') else None


def forward_flops(kernel, b, n, h, d, chunk):
  if kernel in QUADRATIC:
    return 4 * b * h * n * n * d
  if kernel.startswith('linformer_k'):
    k = linformer_k(kernel)
    return 4 * b * h * k * n * d + 4 * b * h * n * k * d
  return {
      'linear': 4 * b * h * n * d * d,
      'elu_linear': 4 * b * h * n * d * (d + 1),
      'linear_causal': 4 * b * h * n * (d * d + chunk * d),
      'elu_linear_causal': 2 * b * h * n * (chunk * d + chunk * (d + 1) + 2 * d * (d + 1)),
  }[kernel]


def flops(kernel, mode, b, n, h, d, chunk):
  return forward_flops(kernel, b, n, h, d, chunk) * (1 if mode == 'fwd' else 3)


def estimate_bytes(kernel, mode, b, n, h, d):
  """Rough peak footprint, to skip sizes that cannot fit before trying them.

  In [b, n, h, d] float32 activations plus n×n (or n×k) score arrays, with
  multipliers a little above XLA's CPU buffer assignments (memory_analysis at
  n = 16k and 64k), plus the JAX runtime.
  """
  act = b * n * h * d * 4
  fwd = mode == 'fwd'
  runtime = 300 * harness.MiB
  if kernel in QUADRATIC:
    # XLA keeps 2 score arrays forward, 3 for forward+backward.
    return runtime + 6 * act + (2 if fwd else 3) * b * h * n * n * 4
  if kernel.startswith('linformer_k'):
    return runtime + 8 * act + (2 if fwd else 4) * b * h * n * linformer_k(kernel) * 4
  multiplier = {(False, True): 8, (False, False): 12, (True, True): 10, (True, False): 16}
  return runtime + multiplier[('causal' in kernel, fwd)] * act


# ----------------------------------------------------------------------------- worker


def _kernel_fn(kernel, n, chunk):
  """(fn(q, k, v, *extra), extra): the function to time and its other inputs.

  Linformer's projections are inputs, not closed-over constants, which XLA
  would fold at compile time.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from linformer_jax import attention  # pylint: disable=g-import-not-at-top
  if kernel.startswith('dpa_'):
    impl = kernel[len('dpa_'):]
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=impl), ()
  if kernel.startswith('linformer_k'):
    k_rows = linformer_k(kernel)
    proj = tuple(jax.random.normal(jax.random.PRNGKey(i), (k_rows, n)) / math.sqrt(k_rows)
                 for i in (1, 2))
    return attention.linformer_attention, proj
  name = kernel[:-len('_causal')] if kernel.endswith('_causal') else kernel
  causal = kernel.endswith('_causal')
  return lambda q, k, v: attention.attend(name, q, k, v, causal=causal, chunk_size=chunk), ()


def _matmul_worker(spec):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size = spec['size']
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  times, _ = harness.timed_runs(lambda: matmul(a, b).block_until_ready(), reps=spec['reps'],
                                budget_s=spec['budget_s'], max_warmup_s=1e9)
  t = harness.median(times)
  return {'status': 'ok', 'size': size, 'median_s': t, 'runs': len(times),
          'gflops': 2 * size ** 3 / t / 1e9, 'device': harness.device_info()}


def _kernel_worker(spec):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  device = harness.device_info()
  rss_base = harness.peak_rss()
  b, n, h, d = spec['batch'], spec['n'], spec['heads'], spec['head_dim']
  # cuDNN's fused attention takes half precision only.
  dtype = jnp.bfloat16 if spec['kernel'] == 'dpa_cudnn' else jnp.float32
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q, k, v = (jax.random.normal(key, (b, n, h, d), dtype) for key in keys)
  fn, extra = _kernel_fn(spec['kernel'], n, spec['chunk'])
  args = (q, k, v) + extra
  if spec['mode'] == 'fwd':
    step = jax.jit(fn)
  else:
    step = jax.jit(jax.grad(lambda q, k, v, *extra: fn(q, k, v, *extra).astype(jnp.float32).sum(),
                            argnums=(0, 1, 2)))
  tic = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - tic
  xla_bytes = harness.xla_memory(compiled)
  limit = harness.memory_limit()
  result = {'device': device, 'compile_s': compile_s, 'xla_memory_bytes': xla_bytes}
  fraction = spec['memory_fraction']
  if xla_bytes and xla_bytes > fraction * limit:
    return dict(result, status='skipped',
                reason=f'XLA plans {xla_bytes / harness.GiB:.1f} GiB > {fraction:.0%} '
                       f'of {limit / harness.GiB:.1f} GiB available')
  times, warmup = harness.timed_runs(lambda: jax.block_until_ready(compiled(*args)),
                                     reps=spec['reps'], budget_s=spec['budget_s'],
                                     max_warmup_s=spec['max_warmup_s'])
  device_peak, _ = harness.device_memory()
  rss = harness.peak_rss()
  return dict(result, status='ok', median_s=harness.median(times), runs=len(times),
              times_s=times, warmup_s=warmup, warmup_only=len(times) == 1 and times[0] == warmup,
              peak_rss_bytes=rss, rss_after_init_bytes=rss_base,
              rss_above_init_bytes=rss - rss_base, device_peak_bytes=device_peak,
              peak_memory_bytes=device_peak or rss)


RATIO_VARIANTS = ('linear', 'linear_causal', 'linear_causal_parallel', 'elu_linear',
                  'elu_linear_causal')


def _parallel_causal_linear(chunk):
  """linear_attention(causal=True) with the chunk-parallel implementation forced."""
  import linformer_jax as lj  # pylint: disable=g-import-not-at-top
  return lambda q, k, v: lj.linear_attention(q, k, v, causal=True, chunk_size=chunk,
                                             implementation='chunked')


def _ratio_worker(spec):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  b, n, h, d = spec['batch'], spec['n'], spec['heads'], spec['head_dim']
  q, k, v = (jax.random.normal(key, (b, n, h, d), jnp.float32)
             for key in jax.random.split(jax.random.PRNGKey(0), 3))
  compiled = {}
  for variant in spec['variants']:
    fn = (_parallel_causal_linear(spec['chunk']) if variant == 'linear_causal_parallel'
          else _kernel_fn(variant, n, spec['chunk'])[0])
    for mode in MODES:
      step = jax.jit(fn) if mode == 'fwd' else jax.jit(jax.grad(
          lambda q, k, v, fn=fn: fn(q, k, v).sum(), argnums=(0, 1, 2)))
      compiled[variant, mode] = step.lower(q, k, v).compile()
      jax.block_until_ready(compiled[variant, mode](q, k, v))  # warm-up
  times = {key: [] for key in compiled}
  for _ in range(spec['reps']):
    for key, c in compiled.items():
      tic = time.perf_counter()
      jax.block_until_ready(c(q, k, v))
      times[key].append(time.perf_counter() - tic)
  return {'status': 'ok', 'device': harness.device_info(), 'peak_rss_bytes': harness.peak_rss(),
          'times_s': {f'{var}/{mode}': t for (var, mode), t in times.items()}}


def causal_ratio(args, script):
  """Side-by-side causal/non-causal times, one process per n; writes causal_ratio.json/.md."""
  host = harness.host_info()
  ns = [int(x) for x in (args.ns or '4096,65536').split(',')]
  variants = args.kernels.split(',') if args.kernels else list(RATIO_VARIANTS)
  runs = []
  for n in ns:
    spec = dict(kind='ratio', n=n, batch=args.batch, heads=args.heads, head_dim=args.head_dim,
                chunk=args.chunk, reps=args.reps, variants=variants)
    result = harness.run_worker(script, spec, args.worker_overhead_s + 60 * args.reps)
    runs.append(dict(result, n=n))
    print(n, result.get('status'), result.get('reason', ''), flush=True)
  rows = []
  for run in runs:
    if run['status'] != 'ok':
      rows.append([run['n'], 'failed', run.get('reason', ''), '', '', ''])
      continue
    t = run['times_s']
    for var in variants:
      for mode in MODES:
        base = 'elu_linear' if var.startswith('elu') else 'linear'
        best, base_best = min(t[f'{var}/{mode}']), min(t[f'{base}/{mode}'])
        rows.append([run['n'], var, mode, harness.fmt(best * 1e3), harness.fmt(harness.median(t[f'{var}/{mode}']) * 1e3),
                     harness.fmt(best / base_best)])
  report = {'benchmark': 'causal_ratio', 'command': 'python benchmarks/kernels.py ' + ' '.join(args.argv),
            'host': host, 'settings': dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim,
                                           chunk=args.chunk, reps=args.reps),
            'runs': runs, 'load_average_end': harness.load_average()}
  device = next((r['device'] for r in runs if r['status'] == 'ok'), {})
  md = '\n'.join([
      '# Causal against non-causal kernels, side by side in one process per n', '',
      f"Machine: {harness.machine_line(host, device)}; load at end {report['load_average_end']}.", '',
      f"Batch {args.batch}, {args.heads} heads, head_dim {args.head_dim}, float32, chunk {args.chunk}; "
      f'{args.reps} interleaved rounds after a warm-up call; ratio = min time / min time of the '
      'non-causal kernel of the same family and mode.', '',
      harness.markdown_table(['n', 'variant', 'mode', 'min ms', 'median ms', 'x non-causal'], rows)])
  out = args.out or harness.default_out('kernels_causal_ratio', args.quick)
  os.makedirs(out, exist_ok=True)
  for ext, text in (('json', json.dumps(report, indent=1)), ('md', md)):
    with open(os.path.join(out, f'causal_ratio.{ext}'), 'w') as f:
      f.write(text + '\n')
  print(md)


def worker(spec):
  work = {'matmul': _matmul_worker, 'ratio': _ratio_worker}.get(spec['kind'], _kernel_worker)
  harness.emit(work(spec))


# ----------------------------------------------------------------------------- sweep


def plan(args, platform):
  """Every (kernel, mode, n) to measure, in run order: forward before
  forward+backward, the exact kernel first (the others are compared with it),
  all kernels over the common sizes, then (`extended`) the linear family
  beyond them, last so that they are what a short time budget cuts."""
  kernels = ['softmax', 'linear', 'linear_causal', 'elu_linear', 'elu_linear_causal',
             'linformer_k128', 'linformer_k256', 'dpa_xla']
  if platform == 'gpu':
    kernels.append('dpa_cudnn')
  if args.kernels:
    kernels = [k for k in kernels if k in args.kernels.split(',')]
  ns = [int(x) for x in args.ns.split(',')] if args.ns else [
      2 ** i for i in range(int(math.log2(args.min_n)), int(math.log2(args.max_n)) + 1)]
  top = max(ns)
  extra = [2 ** i for i in range(int(math.log2(top)) + 1,
                                 int(math.log2(max(args.max_n_linear, top))) + 1)]
  configs = [dict(kernel=k, mode=m, n=n, extended=False) for m in MODES for k in kernels for n in ns
             if m == 'fwd' or n <= args.max_n_bwd]
  configs += [dict(kernel=k, mode=m, n=n, extended=True) for m in MODES for k in kernels
              if k in LINEAR_FAMILY for n in extra if m == 'fwd' or n <= args.max_n_bwd]
  return configs


def _skip(config, reason):
  return dict(config, status='skipped', reason=reason)


def _run_group(configs, args, script, settings, device, deadline, log, prev=None, root=None):
  """One (kernel, mode) in increasing n; each size's time is predicted from the last measured
  one (`prev`), and once a size is skipped (`root`: why) every larger one is too.

  Returns (results, prev, root) so that a later group can continue the sequence.
  """
  results = []
  for config in configs:
    n = config['n']
    est = estimate_bytes(config['kernel'], config['mode'], settings['batch'], n,
                         settings['heads'], settings['head_dim'])
    avail = harness.available_memory()
    remaining = deadline - time.time()
    power = 2 if config['kernel'] in QUADRATIC else 1
    predicted = prev['median_s'] * (n / prev['n']) ** power if prev else 0.0
    # Warm-up plus the timed calls (the budget stops them), on top of start-up and
    # compile, which take about what they took for the previous size.
    calls = 1 + min(args.reps, max(1, math.ceil(args.rep_budget_s / max(predicted, 1e-3))))
    expected = (prev['worker_wall_s'] - prev['warmup_s'] - sum(prev['times_s']) if prev
                else args.startup_s) + predicted * calls
    if root is not None:
      result = _skip(config, f'a smaller n was skipped ({root})')
    elif device['platform'] == 'cpu' and est > args.memory_fraction * avail:
      result = _skip(config, f'estimated {est / harness.GiB:.1f} GiB > {args.memory_fraction:.0%} '
                             f'of {avail / harness.GiB:.1f} GiB available')
    elif predicted > args.max_run_s:
      result = _skip(config, f'predicted {predicted:.0f} s per call > --max_run_s={args.max_run_s:.0f}')
    elif expected > remaining:
      result = _skip(config, f'time budget: {max(remaining, 0):.0f} s left, needs ~{expected:.0f} s')
    else:
      spec = dict(config, kind='kernel', batch=settings['batch'], heads=settings['heads'],
                  head_dim=settings['head_dim'], chunk=settings['chunk'], reps=args.reps,
                  budget_s=args.rep_budget_s, max_warmup_s=args.max_warmup_s,
                  memory_fraction=args.memory_fraction)
      # A generous timeout: it only catches hangs and swapping.
      timeout = args.worker_overhead_s + 3 * predicted * calls
      result = dict(config, **harness.run_worker(script, spec, timeout, env=args.worker_env))
      result.pop('device', None)
    result['flops'] = flops(config['kernel'], config['mode'], settings['batch'], n,
                            settings['heads'], settings['head_dim'], settings['chunk'])
    result['estimated_bytes'] = est
    if result['status'] == 'ok':
      prev = result
    elif root is None:
      root = f"n={n}: {result['reason']}"
    results.append(result)
    log(result)
  return results, prev, root


def sweep(args, script, settings, device):
  """Runs the plan: every (kernel, mode) group up to --max_n, then the sizes beyond it.

  --jobs > 1 runs that many groups at once: for smoke runs only, as concurrent
  workers disturb each other's timings and memory.
  """
  configs = plan(args, device['platform'])
  groups = {}
  for c in configs:
    groups.setdefault((c['kernel'], c['mode'], c['extended']), []).append(c)
  start = time.time()
  deadline = start + args.time_budget_s
  lock = threading.Lock()
  count = [0]

  def log(r):
    with lock:
      count[0] += 1
      status = (f"{r['median_s'] * 1e3:.2f} ms, peak {r['peak_memory_bytes'] / harness.MiB:.0f} MiB"
                if r['status'] == 'ok' else f"{r['status']}: {r['reason']}")
      print(f"[{count[0]}/{len(configs)} {time.time() - start:.0f}s] {r['kernel']} {r['mode']} "
            f"n={r['n']}: {status}", flush=True)

  def run(key):
    return _run_group(groups[key], args, script, settings, device, deadline, log)

  base = [k for k in groups if not k[2]]
  state = {}
  with concurrent.futures.ThreadPoolExecutor(max(args.jobs, 1)) as pool:
    for key, out in zip(base, pool.map(run, base)):
      state[key[:2]] = out
  results = [r for out in state.values() for r in out[0]]
  for key in (k for k in groups if k[2]):
    _, prev, root = state.get(key[:2], ([], None, None))
    results += _run_group(groups[key], args, script, settings, device, deadline, log, prev, root)[0]
  order = {(c['kernel'], c['mode'], c['n']): i for i, c in enumerate(configs)}
  return sorted(results, key=lambda r: order[(r['kernel'], r['mode'], r['n'])])


# ----------------------------------------------------------------------------- analysis


def _ok(results, kernel, mode, n):
  for r in results:
    if (r['kernel'], r['mode'], r['n']) == (kernel, mode, n) and r['status'] == 'ok':
      return r
  return None


def add_rates(results, matmul_gflops):
  for r in results:
    if r['status'] == 'ok':
      r['gflops'] = r['flops'] / r['median_s'] / 1e9
      r['fraction_of_matmul'] = r['gflops'] / matmul_gflops
      half = _ok(results, r['kernel'], r['mode'], r['n'] // 2)
      r['growth_vs_half_n'] = r['median_s'] / half['median_s'] if half else None


def growth_summary(results, lo=4096, hi=65536):
  """Per (kernel, mode): time growth per doubling of n from lo to hi (geometric mean and max)."""
  summary = {}
  for kernel, mode in sorted({(r['kernel'], r['mode']) for r in results}):
    a, b = _ok(results, kernel, mode, lo), _ok(results, kernel, mode, hi)
    steps = [r['growth_vs_half_n'] for r in results if r['kernel'] == kernel and r['mode'] == mode
             and r['status'] == 'ok' and lo < r['n'] <= hi and r.get('growth_vs_half_n')]
    doublings = math.log2(hi / lo)
    summary[f'{kernel}/{mode}'] = {
        'geomean': (b['median_s'] / a['median_s']) ** (1 / doublings) if a and b else None,
        'max': max(steps) if len(steps) == doublings else None, 'per_doubling': steps}
  return summary


def targets(results, matmul_gflops, growth):
  """The issue's targets, each with its measured value and whether it is met (None: not measured)."""
  out = []

  def add(name, value, met, detail):
    out.append({'target': name, 'value': value, 'met': met, 'detail': detail})

  n = 16384
  lin, soft = _ok(results, 'linear', 'fwd', n), _ok(results, 'softmax', 'fwd', n)
  if lin and soft:
    speed = soft['median_s'] / lin['median_s']
    mem = soft['peak_memory_bytes'] / lin['peak_memory_bytes']
    mem_above = soft['rss_above_init_bytes'] / max(lin['rss_above_init_bytes'], 1)
    add('linear fwd >= 100x faster than softmax at n=16384', speed, speed >= 100,
        f"{soft['median_s']:.3g} s vs {lin['median_s'] * 1e3:.3g} ms")
    add('linear fwd >= 50x less peak memory than softmax at n=16384', mem, mem >= 50,
        f"peak RSS {soft['peak_memory_bytes'] / harness.MiB:.0f} vs "
        f"{lin['peak_memory_bytes'] / harness.MiB:.0f} MiB; above the JAX-initialised "
        f'process: {mem_above:.0f}x')
  else:
    skipped = [r for r in results if (r['kernel'], r['mode'], r['n']) in
               (('softmax', 'fwd', n), ('linear', 'fwd', n)) and r['status'] != 'ok']
    reason = '; '.join(f"{r['kernel']}: {r.get('reason')}" for r in skipped) or 'not planned'
    add('linear fwd >= 100x faster / >= 50x less memory than softmax at n=16384', None, None, reason)
  for kernel in ('linear', 'elu_linear', 'linformer_k128', 'linformer_k256'):
    for mode in MODES:
      g = growth.get(f'{kernel}/{mode}', {}).get('geomean')
      add(f'{kernel} {mode}: growth per doubling <= 2.2x from 4k to 64k', g,
          None if g is None else g <= 2.2,
          'max single doubling: ' + harness.fmt(growth.get(f'{kernel}/{mode}', {}).get('max')))
  for kernel in ('linear', 'elu_linear'):
    for mode in MODES:
      ratios = {r['n']: r['median_s'] / base['median_s'] for r in results
                if r['kernel'] == kernel + '_causal' and r['mode'] == mode and r['status'] == 'ok'
                for base in [_ok(results, kernel, mode, r['n'])] if base}
      big = max((m for m in ratios if m <= 65536), default=None)
      value = ratios.get(big)
      add(f'{kernel}_causal {mode} within 2x of non-causal (at the largest common n <= 64k)',
          value, None if value is None else value <= 2.0,
          f'n={big}; ratio by n: ' + ', '.join(f'{m}: {v:.2f}' for m, v in sorted(ratios.items())))
  lin = _ok(results, 'linear', 'fwd', 65536)
  frac = lin['fraction_of_matmul'] if lin else None
  add('linear fwd at n=65536 >= 40% of the measured matmul GFLOP/s', frac,
      None if frac is None else frac >= 0.4,
      f"{lin['gflops']:.1f} of {matmul_gflops:.1f} GFLOP/s" if lin else 'not measured')
  return out


# ----------------------------------------------------------------------------- outputs


def _pivot(results, mode, field, scale, kernels, ns):
  rows = []
  for kernel in kernels:
    row = [kernel]
    for n in ns:
      r = next((r for r in results if (r['kernel'], r['mode'], r['n']) == (kernel, mode, n)), None)
      if r is None:
        row.append('')
      elif r['status'] != 'ok':
        row.append('skip')
      else:
        row.append(harness.fmt(r[field] * scale))
    rows.append(row)
  return harness.markdown_table(['kernel'] + [f'n={n}' for n in ns], rows)


def markdown(report):
  res, s = report['configs'], report['settings']
  kernels = list(dict.fromkeys(r['kernel'] for r in res))
  ns = sorted({r['n'] for r in res})
  lines = [f"# Attention kernels: speed and memory against n ({report['run']})", '',
           f"Machine: {harness.machine_line(report['host'], report['device'])}; load at end "
           f"{report['load_average_end']}.", '',
           f"Shape: batch {s['batch']}, {s['heads']} heads, head_dim {s['head_dim']}, float32; "
           f"causal chunk {s['chunk']}. Median of up to {s['reps']} calls after a warm-up call "
           f"(one fresh process per row). Matmul reference: {report['matmul']['gflops']:.1f} GFLOP/s "
           f"(f32 {report['matmul']['size']}² jnp.matmul; best of the start/end measurements "
           f"{', '.join(harness.fmt(g) for g in report['matmul']['measurements'])}).", '',
           'FLOPs are matmul FLOPs (formulas in kernels.json). Peak memory is the worker '
           "process's max RSS (device peak bytes on accelerators), JAX runtime included; "
           '"above init" subtracts the RSS of the same process right after JAX started. '
           '"XLA est." is compiled.memory_analysis() (arguments + outputs + temporaries), which '
           'undercounts on CPU.', '']
  for mode in MODES:
    lines += [f'## {mode}: median time (ms)', '', _pivot(res, mode, 'median_s', 1e3, kernels, ns), '']
  lines += ['## fwd: peak memory (MiB)', '',
            _pivot(res, 'fwd', 'peak_memory_bytes', 1 / harness.MiB, kernels, ns), '',
            '## fwd: achieved GFLOP/s', '', _pivot(res, 'fwd', 'gflops', 1, kernels, ns), '']
  lines += ['## Growth of time per doubling of n, 4k to 64k', '', harness.markdown_table(
      ['kernel/mode', 'geometric mean', 'max', 'each doubling'],
      [[k, harness.fmt(g['geomean']), harness.fmt(g['max']),
        ', '.join(harness.fmt(x) for x in g['per_doubling'])]
       for k, g in report['growth'].items()]), '']
  lines += ['## Targets', '', harness.markdown_table(
      ['target', 'measured', 'met', 'detail'],
      [[t['target'], harness.fmt(t['value']), {True: 'yes', False: 'no', None: 'n/a'}[t['met']],
        t['detail']] for t in report['targets']]), '']
  rows = []
  for r in res:
    ok = r['status'] == 'ok'
    rows.append([r['kernel'], r['mode'], r['n'], r['status'],
                 harness.fmt(r['median_s'] * 1e3) if ok else '-', r.get('runs', '-'),
                 harness.fmt(r.get('gflops')), harness.fmt(r.get('fraction_of_matmul')),
                 harness.fmt(r['peak_memory_bytes'] / harness.MiB) if ok else '-',
                 harness.fmt(r['rss_above_init_bytes'] / harness.MiB) if ok else '-',
                 harness.fmt(r['xla_memory_bytes'] / harness.MiB) if r.get('xla_memory_bytes') else '-',
                 harness.fmt(r.get('growth_vs_half_n')), '' if ok else r['reason']])
  lines += ['## All configurations', '', harness.markdown_table(
      ['kernel', 'mode', 'n', 'status', 'median ms', 'runs', 'GFLOP/s', 'of matmul',
       'peak MiB', 'above init MiB', 'XLA est. MiB', 'x vs n/2', 'note'], rows)]
  return '\n'.join(lines)


def figure(report):
  plt = harness.pyplot()
  res = report['configs']
  fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout='constrained')
  panels = [(axes[0, 0], 'fwd', 'median_s', 'forward time (s)'),
            (axes[0, 1], 'fwd_bwd', 'median_s', 'forward+backward time (s)'),
            (axes[1, 0], 'fwd', 'peak_memory_mib', 'forward peak memory (MiB)'),
            (axes[1, 1], 'fwd', 'gflops', 'forward GFLOP/s')]
  for ax, mode, field, title in panels:
    for kernel in dict.fromkeys(r['kernel'] for r in res):
      pts = sorted((r['n'], r[field] if field != 'peak_memory_mib' else r['peak_memory_bytes'] / harness.MiB)
                   for r in res if r['kernel'] == kernel and r['mode'] == mode and r['status'] == 'ok')
      if pts:
        ax.plot(*zip(*pts), marker='o', ms=3, label=kernel)
    if field == 'gflops':
      ax.axhline(report['matmul']['gflops'], color='k', ls='--', lw=1, label='f32 matmul')
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('sequence length n')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
  axes[0, 0].legend(fontsize=8)
  s = report['settings']
  fig.suptitle(f"Attention kernels, batch {s['batch']}, {s['heads']} heads, head_dim {s['head_dim']} "
               f"({report['device']['device_kind']}, {report['run']})")
  return fig


# ----------------------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='smoke run: tiny sizes, minutes')
  p.add_argument('--causal_ratio', action='store_true',
                 help='only causal vs non-causal, side by side in one process per n (--ns)')
  p.add_argument('--out', help='results folder (default benchmarks/results/kernels, --quick benchmarks/quick/kernels)')
  p.add_argument('--worker', help=argparse.SUPPRESS)
  p.add_argument('--kernels', help='comma-separated subset of kernels')
  p.add_argument('--ns', help='comma-separated sequence lengths (overrides --min_n/--max_n)')
  p.add_argument('--min_n', type=int, default=512)
  p.add_argument('--max_n', type=int, default=65536, help='largest n for every kernel')
  p.add_argument('--max_n_linear', type=int, default=1 << 20,
                 help='linear, elu_linear (and causal) continue doubling up to this n')
  p.add_argument('--max_n_bwd', type=int, default=1 << 30, help='largest n timed forward+backward')
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument('--chunk', type=int, default=64, help='chunk_size of the causal kernels')
  p.add_argument('--reps', type=int, default=5, help='timed calls per configuration (at most)')
  p.add_argument('--rep_budget_s', type=float, default=6.0, help='stop timing after this long')
  p.add_argument('--max_warmup_s', type=float, default=20.0,
                 help='a slower warm-up call is the only sample')
  p.add_argument('--max_run_s', type=float, default=120.0, help='skip sizes predicted slower')
  p.add_argument('--startup_s', type=float, default=20.0,
                 help='expected worker start-up and compile time, for the time budget')
  p.add_argument('--worker_overhead_s', type=float, default=180.0,
                 help='worker timeout on top of 3x the predicted run time')
  p.add_argument('--memory_fraction', type=float, default=0.7,
                 help='skip sizes expected to need more than this fraction of available memory')
  p.add_argument('--time_budget_s', type=float, default=25 * 60,
                 help='sizes that would end after this are skipped')
  p.add_argument('--matmul_size', type=int, default=4096)
  p.add_argument('--jobs', type=int, default=1,
                 help='(kernel, mode) groups run at once; > 1 only for smoke runs')
  args = p.parse_args(argv)
  if args.quick:
    # Compiling dominates a smoke run (the causal scans' backward most), so
    # forward+backward is compiled at the smaller size only.
    args.ns = args.ns or '256,1024'
    args.max_n_linear, args.max_n_bwd = 0, min(args.max_n_bwd, 256)
    args.reps, args.rep_budget_s, args.max_run_s = 3, 1.0, 10.0
    args.worker_overhead_s, args.matmul_size, args.jobs = 300.0, 1024, 2
  args.worker_env = harness.quick_env() if args.quick else None
  args.argv = argv
  return args


def main(argv):
  args = parse_args(argv)
  if args.worker:
    worker(json.loads(args.worker))
    return
  script = os.path.abspath(__file__)
  if args.causal_ratio:
    causal_ratio(args, script)
    return
  out = args.out or harness.default_out('kernels', args.quick)
  settings = dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, chunk=args.chunk,
                  reps=args.reps, rep_budget_s=args.rep_budget_s)
  host = harness.host_info()
  tic = time.time()
  mm_spec = dict(kind='matmul', size=args.matmul_size, reps=args.reps, budget_s=args.rep_budget_s)
  mm_start = harness.run_worker(script, mm_spec, 600)
  if mm_start['status'] != 'ok':
    raise RuntimeError(f"matmul reference failed: {mm_start['reason']}")
  device = mm_start.pop('device')
  print(f"{harness.machine_line(host, device)}\nmatmul: {mm_start['gflops']:.1f} GFLOP/s", flush=True)
  results = sweep(args, script, settings, device)
  mm_end = harness.run_worker(script, mm_spec, 600)
  measurements = [m['gflops'] for m in (mm_start, mm_end) if m['status'] == 'ok']
  matmul = {'size': args.matmul_size, 'gflops': max(measurements), 'measurements': measurements}
  add_rates(results, matmul['gflops'])
  growth = growth_summary(results)
  report = {
      'benchmark': 'kernels', 'run': 'quick' if args.quick else 'full',
      'command': 'python benchmarks/kernels.py ' + ' '.join(argv), 'host': host, 'device': device,
      'settings': settings, 'matmul': matmul, 'flop_formulas': FLOP_FORMULAS,
      'planned': len(results), 'configs': results, 'growth': growth,
      'targets': targets(results, matmul['gflops'], growth),
      'elapsed_s': round(time.time() - tic, 1), 'load_average_end': harness.load_average(),
  }
  paths = harness.write_outputs(out, 'kernels', report, markdown(report), figure(report))
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
