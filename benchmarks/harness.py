"""Benchmark plumbing shared by the scripts: fresh-subprocess workers, machine facts, outputs.

Each measured configuration runs in its own Python process (`run_worker`), so its
peak resident memory (ru_maxrss) belongs to that configuration alone and an
out-of-memory kill takes down only the worker. The parent never imports JAX:
on an accelerator it would claim device memory the workers need.
"""
import datetime
import glob
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

# A worker prints its result as one line starting with this marker.
RESULT_MARKER = '@@RESULT@@ '
GiB = 1 << 30
MiB = 1 << 20


# ----------------------------------------------------------------------------- machine


def _meminfo(field):
  """A /proc/meminfo field in bytes, or None off Linux."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def available_memory():
  """Bytes the OS could give a new process now (MemAvailable; total RAM as fallback)."""
  avail = _meminfo('MemAvailable')
  if avail is None:
    avail = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return avail


def cpu_model():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_average():
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def host_info():
  """Facts about the host, gathered without JAX."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  total = _meminfo('MemTotal') or os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'cpu_model': cpu_model(),
      'cpu_cores': cores,
      'ram_gib': round(total / GiB, 1),
      'available_ram_gib': round(available_memory() / GiB, 1),
      'load_average_1_5_15': load_average(),
      'python': platform.python_version(),
      'platform': platform.platform(),
  }


def device_info():
  """The JAX device the workers use; call inside a worker only."""
  import jax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  return {'platform': dev.platform, 'device_kind': dev.device_kind,
          'device_count': jax.device_count(), 'jax_version': jax.__version__}


# ----------------------------------------------------------------------------- memory


def peak_rss():
  """This process's peak resident set size in bytes."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss if sys.platform == 'darwin' else rss * 1024  # Linux reports KiB.


def device_memory():
  """(peak bytes in use, bytes limit) of the first device, or (None, None) (CPU has no stats)."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use'), stats.get('bytes_limit')


def memory_limit():
  """Bytes a worker may plan to use: the device's limit on accelerators, else available RAM."""
  _, limit = device_memory()
  return limit or available_memory()


def xla_memory(compiled):
  """XLA's own estimate (arguments + outputs + temporaries) of a compiled function, in bytes.

  On CPU it undercounts the real footprint (allocator slack, runtime buffers),
  so it is reported beside the measured RSS, never instead of it.
  """
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None  # Not every backend implements it.


# ----------------------------------------------------------------------------- workers


def timed_runs(fn, *, reps, budget_s, max_warmup_s):
  """Median-able wall times of `fn()` (which must block) after one warm-up call.

  Stops after `reps` timed runs or once they took `budget_s`; a warm-up slower
  than `max_warmup_s` is itself the only sample (flagged by the caller), as
  repeating a minute-long run teaches little on a shared machine.
  Returns (times, warmup_time).
  """
  tic = time.perf_counter()
  fn()
  warmup = time.perf_counter() - tic
  if warmup > max_warmup_s:
    return [warmup], warmup
  times = []
  while len(times) < reps and sum(times) < budget_s:
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
  return times, warmup


def median(xs):
  xs = sorted(xs)
  mid = len(xs) // 2
  return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def emit(result):
  """Worker side: hand `result` (a JSON-able dict) to the parent."""
  print(RESULT_MARKER + json.dumps(result), flush=True)


def quick_env():
  """Environment for smoke-run workers: XLA's LLVM optimisations off.

  Compiling is most of a smoke run's time and this cuts it by about 40%; the
  code runs slower, but smoke-run timings mean nothing anyway.
  """
  return {'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()}


def run_worker(script, spec, timeout_s, env=None):
  """Runs `python script --worker <spec json>` in a fresh process and returns its result dict.

  A timeout, a crash or a kill (e.g. by the OOM killer) becomes
  {'status': 'failed', 'reason': ...}: the sweep goes on. ('skipped' is for
  configurations not run on purpose: too large, over the time budget.)
  """
  cmd = [sys.executable, script, '--worker', json.dumps(spec)]
  full_env = dict(os.environ, **(env or {}))
  # Preallocation would make every GPU worker look like it used 75% of the device.
  full_env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  tic = time.time()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=full_env)
  except subprocess.TimeoutExpired:
    return {'status': 'failed', 'reason': f'timeout after {timeout_s:.0f} s'}
  wall = time.time() - tic
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_MARKER):
      result = json.loads(line[len(RESULT_MARKER):])
      result.setdefault('worker_wall_s', round(wall, 2))
      return result
  if proc.returncode < 0:
    reason = f'killed by signal {-proc.returncode}'
    if proc.returncode == -9:
      reason += ' (most likely out of memory)'
  else:
    tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    reason = f'worker failed (exit {proc.returncode}): {tail[:300]}'
  return {'status': 'failed', 'reason': reason}


def run_train(cmd, workdir, env=None, cwd=None):
  """Runs a `train.py ... --workdir=<workdir>` command in a fresh process, from an empty workdir.

  Returns (wall seconds, the rows of its metrics.jsonl, None), or (wall, None,
  reason) when the process fails; the workdir is removed after a success.
  """
  shutil.rmtree(workdir, ignore_errors=True)  # a stale checkpoint would be resumed
  tic = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
  wall = time.time() - tic
  if proc.returncode != 0:
    tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    return wall, None, f'exit {proc.returncode}: {tail[:300]}'
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  shutil.rmtree(workdir, ignore_errors=True)
  return wall, records, None


# ----------------------------------------------------------------------------- outputs


def read_json_files(folder):
  """The contents of every *.json file in a folder, by file name; [] if it does not exist."""
  rows = []
  for path in sorted(glob.glob(os.path.join(folder, '*.json'))):
    with open(path) as f:
      rows.append(json.load(f))
  return rows


def default_out(name, quick):
  """benchmarks/results/<name>/, or benchmarks/quick/<name>/ (git-ignored) for smoke runs."""
  here = os.path.dirname(os.path.abspath(__file__))
  return os.path.join(here, 'quick' if quick else 'results', name)


def markdown_table(headers, rows):
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def fmt(x, digits=3):
  """A number for a table: significant digits, '-' for missing."""
  if x is None:
    return '-'
  if isinstance(x, int):
    return str(x)
  return f'{x:.{digits}g}' if abs(x) < 10 ** digits else f'{x:.0f}'


def machine_line(host, device):
  load = host.get('load_average_1_5_15')
  return (f"{host['cpu_model']}, {host['cpu_cores']} cores, {host['ram_gib']} GiB RAM; "
          f"JAX {device.get('jax_version', '?')} on {device.get('device_kind', '?')} "
          f"({device.get('platform', '?')}); {host['date']}; load average (1/5/15 min) {load}")


def write_outputs(out_dir, name, results, markdown, figure):
  """Writes <name>.json, <name>.md and <name>.png (figure: a matplotlib Figure) into out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f'{name}.{ext}') for ext in ('json', 'md', 'png')}
  with open(paths['json'], 'w') as f:
    json.dump(results, f, indent=1)
    f.write('\n')
  with open(paths['md'], 'w') as f:
    f.write(markdown.rstrip() + '\n')
  figure.savefig(paths['png'], dpi=110, bbox_inches='tight')
  return paths


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
