r"""Recall against cost: MQAR accuracy and training tokens/s for each attention, one frontier.

  python benchmarks/recall.py                 # everything: train runs, throughput, report
  python benchmarks/recall.py train   [--widths 64 --pairs 16 --kinds softmax --steps N --seeds 0]
  python benchmarks/recall.py throughput [--widths 128 --kinds ...]
  python benchmarks/recall.py report          # the table and the plot from what has finished
  python benchmarks/recall.py --quick         # smoke run: 1 tiny cell, 2 kinds, 2 steps

Accuracy: causal MQAR (configs/recall_causal.py, data/recall.py; next-token
prediction, scored at each query key) over width (64, 128) × key-value pairs
(16, 64, 256), seq_len = 4 · pairs (the pairs, then their queries: 1024 tokens
for 256 pairs), key ids max(32, 2 · pairs), 8-layer models (mlp 2 · width,
conv_width 3 in every block as in the config, so attention is the only
difference), the config's steps (600) and learning rate (softmax at 1024
tokens trains 'blocked' on CPU: CPU_BLOCKED_FROM). 3 seeds at width 128
with 64 and 256 pairs, 1 elsewhere: 11 kinds × 10 runs = 110 runs. Not run whole:
on 2 CPU cores a run took 1-9 min at width 64 with 16 pairs, 4-22 min with 64
pairs and 9-41 min at width 128 with 64 pairs (softmax the longest); 256 pairs
(1024 tokens) cost several times more again, so the grid is sized for an
accelerator (benchmarks/README.md lists what has run). --seeds runs one seed
of a target cell before the others. Kinds (KINDS): softmax, linear (the paper's),
elu_linear, window (w = 64), hybrids 3:1 and 7:1 (linear layers, every 4th or
8th softmax), the same hybrids with softmax first ('hybrid 3:1 first': softmax,
linear x 3, twice; 'hybrid 7:1 first': softmax, linear x 7), linear+window (one
layer, gated per head), 'window hybrid 1:1' (linear and window layers alternating,
Based's split) and none (the attention-free control: the convolutions alone).

Throughput: training tokens/s at n = 16384, batch 1, per kind and width: the
same 8-layer causal model through train_throughput.py's worker (the train
library's AdamW step, a fresh process each, median of a few steps after a
warm-up); softmax layers run their default implementation, which on CPU at this
length is 'blocked' (512 queries at a time, O(512·n) scores, also in the backward
pass), and models with a softmax layer also set ModelConfig.remat_attention. A
worker whose XLA plan would not fit is recorded as skipped.

Resumable run by run: every training run writes <out>/runs/<name>.json and
every throughput measurement <out>/throughput/<name>.json as it finishes; a
rerun skips those that exist (delete one to redo it). A training run also
saves a checkpoint every tenth of its steps, so one cut off (a session's end)
goes on from there when the same command runs again; its wall time sums the
processes that trained it. `report` reads whatever
is there and writes recall.json, recall.md (accuracy per cell, mean ± std over
seeds; tokens/s; every run) and recall.png (accuracy against tokens/s, one
panel per number of pairs; skipped with a note where matplotlib is missing).
Outputs: --out, default benchmarks/results/recall/ (--quick:
benchmarks/quick/recall/); training workdirs go to <out>/tmp/ (git-ignored).
"""
import argparse
import collections
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
import quality  # pylint: disable=g-import-not-at-top,wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIG = 'configs/recall_causal.py'
STEPS = ('all', 'train', 'throughput', 'report')
# XLA:CPU keeps every softmax layer's n x n weights for the backward pass: at 1024 tokens
# (batch 64, 4 heads, 8 layers) that asked for 33.5 GB, remat_attention or not. From this
# length a softmax model trains with 'blocked' there (512 queries at a time, recomputed).
CPU_BLOCKED_FROM = 1024
WALL_FILE = 'recall_wall.json'  # in a run's workdir: when each process trained there

# name -> the model keys that make the kind (on top of the config's model).
KINDS = {
    'softmax': {'attention': 'softmax'},
    'linear': {'attention': 'linear'},
    'elu_linear': {'attention': 'elu_linear'},
    'window': {'attention': 'window'},
    'hybrid 3:1': {'layer_attention': 'linear,linear,linear,softmax'},
    'hybrid 7:1': {'layer_attention': ','.join(['linear'] * 7 + ['softmax'])},
    # The same layers with softmax first (the 7:1 one-layer placement that learns 64 pairs).
    'hybrid 3:1 first': {'layer_attention': 'softmax,linear,linear,linear'},
    'hybrid 7:1 first': {'layer_attention': ','.join(['softmax'] + ['linear'] * 7)},
    'linear+window': {'attention': 'linear+window'},
    # Based's split: the paper's attention and the window in alternate layers, each layer with
    # its own projections (linear+window sums both on one set of q, k, v).
    'window hybrid 1:1': {'layer_attention': 'linear,window'},
    'none': {'attention': 'none'},
}

MODES = {
    'full': dict(widths=(64, 128), pairs=(16, 64, 256), kinds=tuple(KINDS), num_layers=8,
                 window=64, steps=None, batch_size=None, num_eval_batches=None,
                 seeds={(128, 64): 3, (128, 256): 3}, throughput_n=16384, reps=3,
                 budget_s=600.0, max_warmup_s=900.0, worker_timeout_s=3 * 3600),
    # One tiny cell, two kinds, two steps: seconds, and every code path.
    'quick': dict(widths=(16,), pairs=(2,), kinds=('linear', 'linear+window'), num_layers=2,
                  window=4, steps=2, batch_size=4, num_eval_batches=1, seeds={},
                  throughput_n=64, reps=1, budget_s=5.0, max_warmup_s=5.0,
                  worker_timeout_s=300),
}


def _name(*parts):
  return '_'.join(str(p) for p in parts).replace(' ', '').replace(':', 'to')


def has_softmax(kind):
  spec = KINDS[kind]
  return 'softmax' in (spec.get('attention', ''), *spec.get('layer_attention', '').split(','))


def model_keys(kind, width, mode):
  """ModelConfig keys of one kind at one width (the config's other keys unchanged)."""
  m = MODES[mode]
  return dict(KINDS[kind], num_layers=m['num_layers'], emb_dim=width, mlp_dim=2 * width,
              window=m['window'])


# ----------------------------------------------------------------------------- accuracy


def plan_train(mode, widths, pairs, kinds, steps, seeds=None):
  """(name, kind, width, pairs, seed, flattened config overrides) of every training run.

  seeds: only these of the seeds each cell plans (None: all of them).
  """
  m = MODES[mode]
  plan = []
  for p in pairs:
    for w in widths:
      for seed in range(m['seeds'].get((w, p), 1)):
        if seeds is not None and seed not in seeds:
          continue
        for kind in kinds:
          o = {f'model.{k}': v for k, v in model_keys(kind, w, mode).items()}
          o.update({'num_pairs': p, 'seq_len': 4 * p, 'key_vocab_size': max(32, 2 * p) if
                    mode == 'full' else 8, 'value_vocab_size': 16 if mode == 'full' else 8,
                    'seed': seed})
          for key in ('batch_size', 'num_eval_batches'):
            if m[key] is not None:
              o[key] = m[key]
          if steps is not None:
            o['num_train_steps'] = steps
          plan.append((_name('w', w, 'p', p, kind, 'seed', seed, 'steps', steps or 'cfg'),
                       kind, w, p, seed, o))
  return plan


def fit_backend(overrides, backend):
  """overrides, with softmax's 'blocked' implementation where XLA:CPU would not fit the model."""
  if (backend == 'cpu' and overrides.get('model.attention') == 'softmax'
      and overrides['seq_len'] >= CPU_BLOCKED_FROM):
    return dict(overrides, **{'model.implementation': 'blocked'})
  return overrides


def run_one(overrides, workdir):
  """Trains one run in this process; its last eval, curve and the train.py command."""
  import jax  # pylint: disable=g-import-not-at-top
  from linformer_jax import config_lib  # pylint: disable=g-import-not-at-top
  from linformer_jax import metrics  # pylint: disable=g-import-not-at-top
  from linformer_jax import trainer  # pylint: disable=g-import-not-at-top
  steps = overrides.get('num_train_steps') or config_lib.load(os.path.join(REPO, CONFIG)).num_train_steps
  # Five evaluations give the curve; the last is the score. A checkpoint at every log line
  # lets a run cut off (a session's end) go on from there when the same command runs again.
  overrides = dict(overrides, warmup_steps=max(1, steps // 20), log_every_steps=max(1, steps // 10),
                   eval_every_steps=max(1, steps // 5), checkpoint_every_steps=max(1, steps // 10),
                   keep_checkpoints=1)
  overrides = fit_backend(overrides, jax.default_backend())
  config = config_lib.load(os.path.join(REPO, CONFIG), overrides)
  segments = resume_or_clear(workdir, config)
  segments.append([time.time(), None])
  _write_segments(workdir, segments)
  trainer.train_and_evaluate(config, workdir)
  segments[-1][1] = time.time()
  _write_segments(workdir, segments)
  wall = sum(end - start for start, end in segments)
  records = metrics.read_metrics(workdir)
  evals = [r for r in records if 'eval_loss' in r]
  if not evals:
    raise RuntimeError(f'no eval record in {workdir}/metrics.jsonl')
  base = {k: v for k, v in records[0].items() if k.startswith('baseline_')}
  return {'status': 'ok', 'eval_accuracy': evals[-1]['eval_accuracy'],
          'eval_loss': evals[-1]['eval_loss'], 'steps': evals[-1]['step'], 'wall_s': round(wall, 1),
          'processes': len(segments), 'baselines': base,
          'curve': [(r['step'], r['eval_loss'], r['eval_accuracy']) for r in evals],
          'command': f'python train.py --config={CONFIG} --workdir=... ' + ' '.join(
              f'--config.{k}={v!r}' if isinstance(v, str) else f'--config.{k}={v}'
              for k, v in overrides.items())}


def resume_or_clear(workdir, config):
  """[[start, end], ...] of the processes that trained this run in workdir so far, or [].

  A workdir holding a checkpoint of this very config is kept (train_and_evaluate resumes
  it); anything else there is removed. A process killed mid-run ends at its last metrics
  line, so the run's wall time counts what it trained, not the pause until the next call.
  """
  from linformer_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from linformer_jax import metrics  # pylint: disable=g-import-not-at-top
  from linformer_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    saved = any(n.isdigit() for n in os.listdir(os.path.join(workdir, checkpoints.CHECKPOINT_DIR)))
    same = saved and workdir_lib.check_config(workdir, config) == {}
  except (OSError, ValueError):  # no workdir or checkpoint; a config that differs
    same = False
  if not same:
    shutil.rmtree(workdir, ignore_errors=True)
    return []
  try:
    with open(os.path.join(workdir, WALL_FILE)) as f:
      segments = json.load(f)
  except FileNotFoundError:  # trained before this file existed: its time is unknown
    return []
  if segments and segments[-1][1] is None:
    metrics_file = os.path.join(workdir, metrics.METRICS_FILE)
    segments[-1][1] = max(segments[-1][0], os.path.getmtime(metrics_file)
                          if os.path.exists(metrics_file) else 0.0)
  return segments


def _write_segments(workdir, segments):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, WALL_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump(segments, f)
  os.replace(path + '.tmp', path)  # a kill leaves the old file or the new one


def train(out, mode, widths, pairs, kinds, steps, seeds=None):
  """Every planned run not yet in <out>/runs/; each writes its JSON when it ends."""
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(out, 'runs'), exist_ok=True)
  plan = plan_train(mode, widths, pairs, kinds, steps, seeds)
  for i, (name, kind, w, p, seed, o) in enumerate(plan):
    path = os.path.join(out, 'runs', name + '.json')
    if os.path.exists(path):
      print(f'[{i + 1}/{len(plan)}] {name}: done before, skipped', flush=True)
      continue
    row = {'name': name, 'kind': kind, 'width': w, 'pairs': p, 'seed': seed, 'overrides': o,
           'host': harness.host_info(), 'device': harness.device_info()}
    try:
      row.update(run_one(o, os.path.join(out, 'tmp', name)))
    except Exception as e:  # pylint: disable=broad-except
      row.update(status='failed', reason=f'{type(e).__name__}: {str(e)[:300]}')
    finally:
      jax.clear_caches()  # compiled programs pile up in one long process (quality.py)
    row['load_average_end'] = harness.load_average()
    if row['status'] == 'ok':  # a failed run is reported, not stored: a rerun tries again
      with open(path, 'w') as f:
        json.dump(row, f, indent=1)
    status = (f"accuracy {row['eval_accuracy']:.4f}, {row['wall_s']:.0f} s" if row['status'] == 'ok'
              else f"failed: {row['reason']}")
    print(f'[{i + 1}/{len(plan)}] {name}: {status}', flush=True)


# ----------------------------------------------------------------------------- throughput


def plan_throughput(mode, widths, kinds, reps=None):
  """(name, worker spec) per kind and width: train_throughput.py's worker at n, batch 1.

  reps: timed steps after the warm-up (default the mode's); fewer also shortens the budget,
  so that one rep of a minutes-long softmax step is all that runs.
  """
  m = MODES[mode]
  reps = reps or m['reps']
  plan = []
  for w in widths:
    for kind in kinds:
      model = model_keys(kind, w, mode)
      attention = model.pop('attention', 'linear')  # a hybrid's layer_attention decides
      model.update(dropout_rate=0.0, causal=True, conv_width=3, chunk_size=32,
                   remat_attention=has_softmax(kind))
      spec = {'attention': attention, 'seq_len': m['throughput_n'], 'batch': 1, 'model': model,
              'reps': reps, 'budget_s': m['budget_s'] * reps / m['reps'],
              'max_warmup_s': m['max_warmup_s']}
      plan.append((_name('w', w, kind, 'n', m['throughput_n']), kind, w, spec))
  return plan


def throughput(out, mode, widths, kinds, reps=None):
  os.makedirs(os.path.join(out, 'throughput'), exist_ok=True)
  env = harness.quick_env() if mode == 'quick' else None
  plan = plan_throughput(mode, widths, kinds, reps)
  for i, (name, kind, w, spec) in enumerate(plan):
    path = os.path.join(out, 'throughput', name + '.json')
    if os.path.exists(path):
      print(f'[{i + 1}/{len(plan)}] {name}: done before, skipped', flush=True)
      continue
    result = harness.run_worker(os.path.join(HERE, 'train_throughput.py'), spec,
                                MODES[mode]['worker_timeout_s'], env=env)
    row = dict(result, name=name, kind=kind, width=w, spec=spec, host=harness.host_info(),
               command=f"python benchmarks/train_throughput.py --worker '{json.dumps(spec)}'")
    if row['status'] != 'failed':  # ok, or skipped for memory: both are answers
      with open(path, 'w') as f:
        json.dump(row, f, indent=1)
    status = (f"{row['tokens_per_s']:.0f} tokens/s" if row['status'] == 'ok'
              else f"{row['status']}: {row.get('reason')}")
    print(f'[{i + 1}/{len(plan)}] {name}: {status}', flush=True)


# ----------------------------------------------------------------------------- report


def summarize(runs, speeds):
  """One row per (kind, width, pairs, steps): accuracy over its seeds and the kind's tokens/s."""
  tokens = {(r['kind'], r['width']): r.get('tokens_per_s') for r in speeds if r['status'] == 'ok'}
  cells = {}
  for r in runs:
    cells.setdefault((r['kind'], r['width'], r['pairs'], r['steps']), []).append(r)
  rows = []
  for (kind, w, p, steps), rs in sorted(cells.items(), key=lambda kv: (
      kv[0][2], kv[0][1], kv[0][3], list(KINDS).index(kv[0][0]))):
    mean, std = quality.mean_std([r['eval_accuracy'] for r in rs])
    rows.append({'kind': kind, 'width': w, 'pairs': p, 'steps': steps,
                 'seeds': sorted(r['seed'] for r in rs), 'accuracy_mean': mean,
                 'accuracy_std': std, 'tokens_per_s': tokens.get((kind, w)),
                 # per seed: the first eval step at >= 99% accuracy (None: never)
                 'steps_to_99': [next((step for step, _, acc in r['curve'] if acc >= 0.99), None)
                                 for r in sorted(rs, key=lambda r: r['seed'])],
                 'mode_guess': rs[0]['baselines'].get('baseline_mode_guess_accuracy')})
  return rows


def _pct(mean, std):
  return '-' if mean is None else f'{100 * mean:.1f}%' + ('' if std is None else f' ± {100 * std:.1f}')


def machines(rows):
  """One line per machine: its facts, the measurements' dates and 1-minute load averages."""
  by = {}
  for r in rows:
    h, d = r['host'], r.get('device', {})
    key = (f"{h['cpu_model']}, {h['cpu_cores']} cores, {h['ram_gib']} GiB RAM; JAX "
           f"{d.get('jax_version', '?')} on {d.get('device_kind', '?')}")
    by.setdefault(key, []).append((h['date'], (h.get('load_average_1_5_15') or [None])[0]))
  lines = []
  for key, facts in by.items():
    dates, loads = sorted(f[0] for f in facts), [f[1] for f in facts if f[1] is not None]
    load = f'; load average (1 min) {min(loads)}-{max(loads)} at start' if loads else ''
    lines.append(f'{key}; {len(facts)} measurements, {dates[0]} to {dates[-1]}{load}')
  return lines


def markdown(report):
  done = report['grid_runs_done']
  lines = [f"# Recall against cost ({report['run']} grid, "
           f"{'complete' if done == report['grid_runs'] else 'partial'})", '',
           f"Command: `{report['command']}`; {report['planned_runs_done']} of "
           f"{report['planned_runs']} planned training runs (and "
           f"{len(report['runs']) - report['planned_runs_done']} others, such as longer ones) "
           f"and {len(report['throughput'])} of "
           f"{report['planned_throughput']} throughput measurements present (the {report['run']} "
           f"grid plans {report['grid_runs']} training runs, {done} of them done).", '']
  lines += ['Machines (as each measurement recorded them):', ''] + [
      f'- {m}' for m in machines(report['runs'] + report['throughput'])] + ['']
  lines += ['## MQAR accuracy (causal, last eval) and training tokens/s at n = '
            f"{report['throughput_n']}", '', harness.markdown_table(
                ['pairs', 'width', 'steps', 'kind', 'accuracy (mean ± std)', 'seeds',
                 'first eval >= 99% (per seed)', 'tokens/s', 'no-recall baseline'],
                [[r['pairs'], r['width'], r['steps'], r['kind'],
                  _pct(r['accuracy_mean'], r['accuracy_std']), len(r['seeds']),
                  ' / '.join('-' if s is None else str(s) for s in r['steps_to_99']),
                  harness.fmt(r['tokens_per_s']), _pct(r['mode_guess'], None)]
                 for r in report['summary']]), '']
  lines += ['## Training throughput, batch 1', '', harness.markdown_table(
      ['kind', 'width', 'n', 'status', 'tokens/s', 'step s', 'compile s', 'remat attention',
       'peak memory GiB', 'note'],
      [[r['kind'], r['width'], r['spec']['seq_len'], r['status'], harness.fmt(r.get('tokens_per_s')),
        harness.fmt(r.get('step_s')), harness.fmt(r.get('compile_s')),
        r['spec']['model']['remat_attention'],
        harness.fmt((r.get('peak_memory_bytes') or 0) / harness.GiB or None),
        r.get('reason', '')] for r in report['throughput']]), '']
  if report.get('plot_note'):
    lines += [report['plot_note'], '']
  lines += ['## Every run', '', harness.markdown_table(
      ['run', 'accuracy', 'eval loss', 'steps', 'wall s'],
      [[r['name'], f"{100 * r['eval_accuracy']:.2f}%", harness.fmt(r['eval_loss'], 4), r['steps'],
        harness.fmt(r['wall_s'])] for r in report['runs']])]
  return '\n'.join(lines)


def _color(kind):
  i = list(KINDS).index(kind)
  return f'C{i}' if i < 10 else 'black'  # C10 would repeat C0


def grid_steps(summary):
  """The training steps most rows of `summary` ran: the study's budget (None if empty)."""
  counts = collections.Counter(r['steps'] for r in summary)
  return counts.most_common(1)[0][0] if counts else None


def figure(report):
  """Accuracy against training tokens/s, one panel per number of pairs; widths by marker."""
  plt = harness.pyplot()
  pairs = sorted({r['pairs'] for r in report['summary']}) or [None]
  fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs) + 2, 3.8), layout='constrained',
                           squeeze=False, sharey=True)
  markers = {w: m for w, m in zip(sorted({r['width'] for r in report['summary']}), 'os^D')}
  budget = grid_steps(report['summary'])
  for ax, p in zip(axes[0], pairs):
    for r in (r for r in report['summary'] if r['pairs'] == p and r['tokens_per_s']):
      other = r['steps'] != budget  # trained longer (or shorter): hollow, its steps named
      ax.errorbar(r['tokens_per_s'], r['accuracy_mean'], yerr=r['accuracy_std'] or 0,
                  marker=markers[r['width']], capsize=3, ls='none',
                  color=_color(r['kind']), **({'mfc': 'none'} if other else {}),
                  label=f"{r['kind']}, width {r['width']}" + (f", {r['steps']} steps" if other
                                                               else ''))
    missing = [f"{r['kind']} (w {r['width']}): {_pct(r['accuracy_mean'], None)}"
               for r in report['summary'] if r['pairs'] == p and not r['tokens_per_s']]
    if missing:  # trained, but no throughput to place them by
      ax.text(0.02, 0.02, 'no tokens/s: ' + ', '.join(missing), transform=ax.transAxes, fontsize=6)
    ax.set_xscale('log')
    ax.margins(x=0.2)
    ax.set_xlabel(f"training tokens/s at n = {report['throughput_n']}")
    ax.set_title(f'{p} key-value pairs')
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
  legend = {}  # one legend beside the panels, so that it hides no point
  for ax in axes[0]:
    legend.update(zip(*reversed(ax.get_legend_handles_labels())))
  fig.legend(legend.values(), legend.keys(), loc='outside right center', fontsize=6)
  axes[0][0].set_ylabel('MQAR accuracy')
  fig.suptitle(f"Recall against cost ({report['grid_runs_done']} of the {report['run']} grid's "
               f"{report['grid_runs']} training runs done)")
  return fig


def report(out, mode, argv, widths, pairs, kinds, steps):
  """recall.json and recall.md (and recall.png, where matplotlib is installed) from <out>."""
  order = lambda r: (r['width'], list(KINDS).index(r['kind']))
  runs = sorted(harness.read_json_files(os.path.join(out, 'runs')),
                key=lambda r: (r['pairs'], *order(r), r['seed']))
  speeds = sorted(harness.read_json_files(os.path.join(out, 'throughput')), key=order)
  grid = plan_train(mode, MODES[mode]['widths'], MODES[mode]['pairs'], MODES[mode]['kinds'], steps)
  planned = plan_train(mode, widths, pairs, kinds, steps)
  present = {r['name'] for r in runs}
  done = lambda plan: sum(name in present for name, *_ in plan)
  rep = {'benchmark': 'recall', 'run': mode, 'command': 'python benchmarks/recall.py ' + ' '.join(argv),
         'config': CONFIG, 'throughput_n': MODES[mode]['throughput_n'],
         'planned_runs': len(planned), 'planned_runs_done': done(planned),
         'planned_throughput': len(plan_throughput(mode, widths, kinds)),
         'grid_runs': len(grid), 'grid_runs_done': done(grid),
         'runs': runs, 'throughput': speeds, 'summary': summarize(runs, speeds)}
  try:
    fig = figure(rep)
  except ImportError:
    fig, rep['plot_note'] = None, 'No plot: matplotlib is not installed in this environment.'
  os.makedirs(out, exist_ok=True)
  paths = {ext: os.path.join(out, f'recall.{ext}') for ext in ('json', 'md')}
  with open(paths['json'], 'w') as f:
    json.dump(rep, f, indent=1)
  with open(paths['md'], 'w') as f:
    f.write(markdown(rep) + '\n')
  if fig is not None:
    paths['png'] = os.path.join(out, 'recall.png')
    fig.savefig(paths['png'], dpi=110, bbox_inches='tight')
  return rep, paths


# ----------------------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('step', nargs='?', default='all', choices=STEPS)
  p.add_argument('--quick', action='store_true', help='smoke run: 1 tiny cell, 2 kinds, 2 steps')
  p.add_argument('--out', help='results folder (default benchmarks/results/recall, --quick '
                               'benchmarks/quick/recall)')
  p.add_argument('--widths', help='comma-separated subset of the widths (full: 64,128)')
  p.add_argument('--pairs', help='comma-separated subset of the numbers of pairs (full: 16,64,256)')
  p.add_argument('--kinds', help=f'comma-separated subset of {list(KINDS)}')
  p.add_argument('--steps', type=int, help="training steps (default: the config's, 600)")
  p.add_argument('--seeds', help='train: comma-separated subset of the seeds each cell plans '
                                 '(full: 0,1,2 at width 128 with 64 and 256 pairs, 0 elsewhere)')
  p.add_argument('--reps', type=int, help='throughput: timed steps after the warm-up '
                                          f"(default {MODES['full']['reps']}; the JSON records it)")
  args = p.parse_args(argv)
  args.mode = 'quick' if args.quick else 'full'
  m = MODES[args.mode]

  def ints(flag, example):
    """The comma-separated integers of a flag, or None where it was not given."""
    given = getattr(args, flag)
    try:
      return tuple(int(x) for x in given.split(',')) if given else None
    except ValueError:
      p.error(f'--{flag}={given!r} must be comma-separated integers, e.g. {example}')

  for field, valid in (('widths', m['widths']), ('pairs', m['pairs'])):
    values = ints(field, valid[0]) or valid
    if any(x < 1 for x in values):
      p.error(f'--{field}={getattr(args, field)!r}: every value must be positive')
    setattr(args, field, values)
  planned = range(max(m['seeds'].values(), default=1))
  args.seeds = ints('seeds', 0)
  if args.seeds and any(s not in planned for s in args.seeds):
    p.error(f'--seeds={",".join(map(str, args.seeds))}: the grid plans seeds '
            f'{",".join(map(str, planned))} at most')
  args.kinds = tuple(args.kinds.split(',')) if args.kinds else m['kinds']
  bad = [k for k in args.kinds if k not in KINDS]
  if bad:
    p.error(f'unknown kind(s) {bad} in --kinds; valid: {list(KINDS)}')
  if args.steps is None:
    args.steps = m['steps']
  elif args.steps < 1:
    p.error(f'--steps must be positive, got {args.steps}')
  if args.reps is not None and args.reps < 1:
    p.error(f'--reps must be positive, got {args.reps}')
  args.out = args.out or harness.default_out('recall', args.quick)
  return args


def main(argv):
  args = parse_args(argv)
  if args.quick:
    os.environ.update(harness.quick_env())  # before JAX starts: see harness.quick_env
  if args.step in ('all', 'train'):
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # one line per run here, not train's per-step lines
    train(args.out, args.mode, args.widths, args.pairs, args.kinds, args.steps, args.seeds)
  if args.step in ('all', 'throughput'):
    throughput(args.out, args.mode, args.widths, args.kinds, args.reps)
  if args.step in ('all', 'report'):
    _, paths = report(args.out, args.mode, argv, args.widths, args.pairs, args.kinds, args.steps)
    print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
