r"""What attention adds: every task x every attention kind at equal steps, beside baselines.

  python benchmarks/quality.py            # full study: 186 runs, ~45 min on 2 CPU cores
  python benchmarks/quality.py --quick    # smoke run: tiny models, 2 steps, about a minute

Each task is trained with each attention kind ('softmax', 'linear' = the paper,
'elu_linear', 'linformer', and 'none', the attention-free control: the same
blocks with the attention branch removed) for the same steps and seeds, with
local mixing (a depthwise convolution, conv_width 3) in every block for every
kind, so the attention is the only difference. Tasks (TASKS below):
  recall         MQAR, bidirectional (configs/recall.py): answer each query key
                 with its value; needs a lookup across the row.
  recall_causal  the same as next-token prediction (configs/recall_causal.py);
                 Linformer has no causal form and is left out.
  mlm_retrieval  masked-LM where each row holds a passage twice and only the
                 second copy is scored (configs/mlm_retrieval.py), at a
                 reduced seq_len.
  mlm            plain masked-LM on the embedded stdlib_docs corpus (configs/mlm.py).
  image          generated shapes (configs/image.py) at 16x16: 256 pixel tokens.
  audio          generated sound events (configs/audio.py), 2000 samples: 1000 tokens.
  listops        ListOps (configs/listops.py) cut to 64-256 tokens.
Then, for every seed, a grid (Zoology, arXiv:2312.04927, fig. 2 style): MQAR
accuracy against model width and number of pairs for softmax, linear and none.
Every row is `linformer_jax.trainer.train_and_evaluate` on a config file with a
few keys overridden (the JSON holds the train.py command of each run); scores
are the last eval of its metrics.jsonl, baselines its step-0 record
(recall: chance and the no-recall mode guess; text: unigram and bigram
cross-entropy; classification: chance and majority class). The classification
tasks are cut to fit; the configs' own defaults are measured in their docstrings.
Each finished run leaves <out>/tmp/<run>/run.json; --resume reuses those, so an
interrupted study continues where it stopped. Outputs (--out, default
benchmarks/results/quality/, --quick benchmarks/quick/quality/): quality.json,
quality.md, quality.png (scores per task), quality_grid.png, quality_curves.png
(eval loss against steps). Run directories and the XLA compilation cache go to
<out>/tmp/, which git ignores.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.abspath(os.path.dirname(os.path.abspath(__file__))))
KINDS = ('softmax', 'softmax_rotary', 'linear', 'elu_linear', 'linformer', 'none')
# A kind is an attention, with rotary positions for 'softmax_rotary' (softmax
# only: the linear kernels cannot take them); the others use learned positions.
KIND_OVERRIDES = {'softmax_rotary': {'model.attention': 'softmax', 'model.position': 'rotary'}}
GRID_KINDS = ('softmax', 'linear', 'none')

# The model every task shares (full mode): 2 blocks of width 64, conv_width 3.
_MODEL = {'model.num_layers': 2, 'model.num_heads': 4, 'model.emb_dim': 64,
          'model.mlp_dim': 128, 'model.conv_width': 3, 'model.dropout_rate': 0.0}
_TINY_MODEL = dict(_MODEL, **{'model.num_layers': 1, 'model.num_heads': 2, 'model.emb_dim': 16,
                              'model.mlp_dim': 32})
# Linformer projects the length to k = seq_len / 4 everywhere.
_RECALL = {'seq_len': 32, 'num_pairs': 4, 'key_vocab_size': 16, 'value_vocab_size': 16,
           'batch_size': 32, 'learning_rate': 3e-3, 'num_eval_batches': 8,
           'num_train_steps': 150, 'model.linformer_k': 8}
_TEXT = {'seq_len': 128, 'batch_size': 8, 'learning_rate': 3e-3, 'num_eval_batches': 8,
         'num_train_steps': 150, 'model.linformer_k': 32}
# Copying from 127 bytes back: what rotary softmax learns within 200 steps at width 128.
_RETRIEVAL = dict(_TEXT, **{'seq_len': 256, 'num_train_steps': 300, 'model.linformer_k': 64})
_QUICK_RECALL = {'seq_len': 16, 'num_pairs': 2, 'key_vocab_size': 8, 'value_vocab_size': 8,
                 'batch_size': 4, 'num_eval_batches': 1, 'num_train_steps': 2,
                 'model.linformer_k': 8}
_QUICK_TEXT = {'seq_len': 32, 'batch_size': 2, 'num_eval_batches': 1, 'num_train_steps': 2,
               'model.linformer_k': 8}
# Classification, cut to fit: 16x16 images (256 pixel tokens, 3x3 grid conv),
# 1000-token clips (a width-15 conv as the filterbank), ListOps of 64-256 tokens.
_CLASSIFY = {'batch_size': 8, 'learning_rate': 3e-3, 'num_train_steps': 300,
             'num_train_examples': 2400, 'num_eval_examples': 256, 'num_eval_batches': 32}
_IMAGE = dict(_CLASSIFY, **{'image_size': 16, 'model.linformer_k': 64})
_AUDIO = dict(_CLASSIFY, **{'num_samples': 2000, 'model.conv_width': 15, 'model.linformer_k': 64})
_LISTOPS = dict(_CLASSIFY, **{'batch_size': 32, 'learning_rate': 1e-3, 'listops_min_len': 64,
                              'listops_max_len': 256, 'num_train_examples': 10000,
                              'num_eval_examples': 512, 'num_eval_batches': 16,
                              'model.dropout_rate': 0.0, 'model.linformer_k': 64})
_QUICK_CLASSIFY = {'batch_size': 2, 'num_train_steps': 2, 'num_train_examples': 16,
                   'num_eval_examples': 4, 'num_eval_batches': 1, 'model.linformer_k': 8}

# name -> config file, the score that decides the task (its baselines are drawn
# beside it), and the overrides every kind shares in full and quick mode.
TASKS = {
    'recall': dict(config='configs/recall.py', metric='eval_accuracy',
                   full=dict(_MODEL, **_RECALL), quick=dict(_TINY_MODEL, **_QUICK_RECALL)),
    'recall_causal': dict(config='configs/recall_causal.py', metric='eval_accuracy',
                          full=dict(_MODEL, **_RECALL), quick=dict(_TINY_MODEL, **_QUICK_RECALL)),
    'mlm_retrieval': dict(config='configs/mlm_retrieval.py', metric='eval_loss',
                          full=dict(_MODEL, **_RETRIEVAL), quick=dict(_TINY_MODEL, **_QUICK_TEXT)),
    'mlm': dict(config='configs/mlm.py', metric='eval_loss',
                full=dict(_MODEL, **_TEXT), quick=dict(_TINY_MODEL, **_QUICK_TEXT)),
    'image': dict(config='configs/image.py', metric='eval_accuracy',
                  full=dict(_MODEL, **_IMAGE),
                  quick=dict(_TINY_MODEL, **_QUICK_CLASSIFY, image_size=8)),
    'audio': dict(config='configs/audio.py', metric='eval_accuracy',
                  full=dict(_MODEL, **_AUDIO),
                  quick=dict(_TINY_MODEL, **_QUICK_CLASSIFY, num_samples=64)),
    'listops': dict(config='configs/listops.py', metric='eval_accuracy',
                    full=dict(_MODEL, **_LISTOPS),
                    quick=dict(_TINY_MODEL, **_QUICK_CLASSIFY, listops_min_len=8,
                               listops_max_len=32)),
}
# Kinds run per task in a smoke run: every kind once, the paper's on every task.
QUICK_KINDS = {'recall': KINDS, 'recall_causal': ('linear',),
               'mlm_retrieval': ('linear', 'softmax_rotary'),
               'mlm': ('linear',), 'image': ('linear',), 'audio': ('linear',),
               'listops': ('linear',)}
# The width x pairs grid on MQAR (configs/recall.py), one run per cell, kind and seed:
# the task's settings with this seq_len and key vocabulary (16 pairs fill 64 tokens).
GRID = {'full': dict(task='recall', widths=(32, 64, 128), pairs=(4, 8, 16), seq_len=64,
                     key_vocab_size=32),
        'quick': dict(task='recall', widths=(16,), pairs=(2,), seq_len=16, key_vocab_size=8)}
# Baseline keys of the step-0 record, per metric, as (key, label) pairs.
BASELINES = {'eval_accuracy': (('baseline_chance_accuracy', 'chance'),
                               ('baseline_mode_guess_accuracy', 'no recall (mode guess)'),
                               ('baseline_majority_accuracy', 'majority class')),
             'eval_loss': (('baseline_unigram_loss', 'unigram'),
                           ('baseline_bigram_loss', 'bigram'))}


def kinds_for(task, quick=False):
  """Kinds a task is run with: Linformer has no causal form; rotary softmax
  only where copying by relative position is the point (mlm_retrieval)."""
  kinds = QUICK_KINDS[task] if quick else KINDS
  return tuple(k for k in kinds if not (k == 'linformer' and task.endswith('_causal')) and
               not (k == 'softmax_rotary' and task != 'mlm_retrieval'))


def overrides_for(task, kind, seed, quick, extra=None):
  """Flattened config overrides of one run: the task's, the kind's, the seed's."""
  o = dict(TASKS[task]['quick' if quick else 'full'])
  o.update(extra or {})
  steps = o['num_train_steps']
  o.update(KIND_OVERRIDES.get(kind, {'model.attention': kind, 'model.position': 'learned'}))
  o.update({'seed': seed, 'warmup_steps': max(1, steps // 10),
            'log_every_steps': max(1, steps // 10),
            # Five evaluations give the learning curve; the last is the score.
            'eval_every_steps': max(1, steps // 5),
            'checkpoint_every_steps': steps, 'keep_checkpoints': 1})
  return o


def run_one(task, kind, seed, workdir, quick, extra=None):
  """Trains one run in this process; returns its scores, curve and baselines."""
  from linformer_jax import metrics  # pylint: disable=g-import-not-at-top
  from linformer_jax import config_lib  # pylint: disable=g-import-not-at-top
  from linformer_jax import trainer  # pylint: disable=g-import-not-at-top
  o = overrides_for(task, kind, seed, quick, extra)
  config = config_lib.load(os.path.join(REPO, TASKS[task]['config']), o)
  shutil.rmtree(workdir, ignore_errors=True)  # A stale checkpoint would be resumed.
  tic = time.time()
  trainer.train_and_evaluate(config, workdir)
  wall = time.time() - tic
  records = metrics.read_metrics(workdir)
  evals = [r for r in records if 'eval_loss' in r]
  if not evals:
    raise RuntimeError(f'no eval record in {workdir}/metrics.jsonl')
  baselines = {k: v for k, v in records[0].items() if k != 'step'} if records[0]['step'] == 0 else {}
  last = evals[-1]
  return {'status': 'ok', 'eval_loss': last['eval_loss'], 'eval_accuracy': last['eval_accuracy'],
          'steps': last['step'], 'wall_s': round(wall, 1), 'baselines': baselines,
          'curve': [(r['step'], r['eval_loss'], r['eval_accuracy']) for r in evals],
          'command': (f"python train.py --config={TASKS[task]['config']} --workdir=... " +
                      ' '.join(f'--config.{k}={v}' for k, v in o.items()))}


def plan_runs(args):
  """(group, task, kind, seed, extra overrides) of every run, in the order they run.

  Seed by seed, the tasks then the grid: a time budget that runs out cuts the
  last seeds, never a whole task or the grid.
  """
  mode = 'quick' if args.quick else 'full'
  tasks = args.tasks.split(',')
  plan = []
  for seed in args.seeds:
    plan += [('main', t, k, seed, None) for t in tasks for k in kinds_for(t, args.quick)]
    if args.grid:
      g = GRID[mode]
      for p in g['pairs']:
        for w in g['widths']:
          extra = {'model.emb_dim': w, 'model.mlp_dim': 2 * w, 'num_pairs': p,
                   'seq_len': g['seq_len'], 'key_vocab_size': g['key_vocab_size'],
                   'model.linformer_k': g['seq_len'] // 4}
          plan += [('grid', g['task'], k, seed, extra) for k in GRID_KINDS]
  return plan


def sweep(args, out):
  plan = plan_runs(args)
  start, results = time.time(), []
  walls = {}  # (task, kind) -> wall of its last run, to predict the next.
  for i, (group, task, kind, seed, extra) in enumerate(plan):
    row = {'group': group, 'task': task, 'kind': kind, 'seed': seed, 'extra': extra or {}}
    remaining = args.time_budget_s - (time.time() - start)
    expected = walls.get((task, kind), 0.0)
    if expected > remaining:
      row.update(status='skipped',
                 reason=f'time budget: {max(remaining, 0):.0f} s left, a run takes ~{expected:.0f} s')
    else:
      name = f"{group}_{task}_{kind}_seed{seed}" + ''.join(
          f"_{k.split('.')[-1]}{v}" for k, v in (extra or {}).items())
      workdir = os.path.join(out, 'tmp', name)
      done = os.path.join(workdir, 'run.json')
      try:
        if args.resume and os.path.exists(done):
          with open(done) as f:
            row.update(json.load(f))
        else:
          row.update(run_one(task, kind, seed, workdir, args.quick, extra))
          with open(done, 'w') as f:
            json.dump(row, f)
        walls[(task, kind)] = row['wall_s']
      except Exception as e:  # pylint: disable=broad-except
        row.update(status='failed', reason=f'{type(e).__name__}: {str(e)[:300]}')
      finally:
        # Compiled programs pile up in one long process: 121 runs in, LLVM could
        # no longer allocate and the process died. The disk cache keeps them.
        import jax  # pylint: disable=g-import-not-at-top
        jax.clear_caches()
    results.append(row)
    status = (f"eval_loss {row['eval_loss']:.4f}, eval_accuracy {row['eval_accuracy']:.4f}, "
              f"{row['wall_s']:.0f} s" if row['status'] == 'ok' else f"{row['status']}: {row['reason']}")
    print(f'[{i + 1}/{len(plan)} {time.time() - start:.0f}s] {group} {task} {kind} seed {seed} '
          f'{extra or ""}: {status}', flush=True)
  return results


# ----------------------------------------------------------------------------- analysis


def mean_std(xs):
  """(mean, sample standard deviation) of a list; None where undefined."""
  if not xs:
    return None, None
  mean = sum(xs) / len(xs)
  std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
  return mean, std


def summarize(runs):
  """Per (task, kind) of the main study: mean and std of both scores over the seeds run."""
  summary = []
  main = [r for r in runs if r['group'] == 'main']
  for task, kind in dict.fromkeys((r['task'], r['kind']) for r in main):
    ok = [r for r in main if (r['task'], r['kind']) == (task, kind) and r['status'] == 'ok']
    row = {'task': task, 'kind': kind, 'seeds': [r['seed'] for r in ok],
           'baselines': ok[0]['baselines'] if ok else {}}
    for field in ('eval_loss', 'eval_accuracy'):
      row[field] = dict(zip(('mean', 'std'), mean_std([r[field] for r in ok])))
    summary.append(row)
  return summary


def grid_table(runs):
  """{(kind, width, pairs): {'mean', 'std'}} of eval accuracy over the grid runs that finished."""
  cells = {}
  for r in runs:
    if r['group'] == 'grid' and r['status'] == 'ok':
      key = (r['kind'], r['extra']['model.emb_dim'], r['extra']['num_pairs'])
      cells.setdefault(key, []).append(r['eval_accuracy'])
  return {key: dict(zip(('mean', 'std'), mean_std(xs))) for key, xs in cells.items()}


def _cell(stat, metric):
  if stat['mean'] is None:
    return '-'
  scale, digits = (100, 1) if metric == 'eval_accuracy' else (1, 3)
  text = f"{stat['mean'] * scale:.{digits}f}"
  if stat['std'] is not None:
    text += f" ± {stat['std'] * scale:.{digits}f}"
  return text + ('%' if metric == 'eval_accuracy' else '')


def _baseline_text(baselines, metric):
  parts = []
  for key, label in BASELINES[metric]:
    if key in baselines:
      v = baselines[key]
      parts.append(f'{label} {v * 100:.1f}%' if metric == 'eval_accuracy' else f'{label} {v:.3f}')
  return ', '.join(parts) or '-'


def markdown(report):
  summary, runs = report['summary'], report['runs']
  lines = [f"# What attention adds: quality at equal steps ({report['run']})", '',
           f"Machine: {harness.machine_line(report['host'], report['device'])}; load at end "
           f"{report['load_average_end']}. Wall time {report['elapsed_s'] / 60:.1f} min.", '',
           f"Command: `{report['command']}`", '']
  tasks = list(dict.fromkeys(r['task'] for r in summary))
  for title, metric, other in (('Main score', None, False), ('Other score', None, True)):
    header = ['task', 'score'] + list(KINDS) + ['baselines']
    rows = []
    for task in tasks:
      m = TASKS[task]['metric']
      if other:
        m = 'eval_loss' if m == 'eval_accuracy' else 'eval_accuracy'
      by = {r['kind']: r for r in summary if r['task'] == task}
      base = next((r['baselines'] for r in by.values() if r['baselines']), {})
      rows.append([task, m.replace('eval_', 'eval ')] +
                  [_cell(by[k][m], m) if k in by else 'n/a' for k in KINDS] +
                  [_baseline_text(base, m) if m in BASELINES and (m == TASKS[task]['metric']) else '-'])
    seeds = sorted({s for r in summary for s in r['seeds']})
    lines += [f'## {title} (mean ± std over seeds {seeds})', '', harness.markdown_table(header, rows), '']
  lines += ['Settings per task (every kind; model keys not listed are the config file\'s):', '']
  for task in tasks:
    s = report['settings'][task]
    lines.append(f"- {task} ({TASKS[task]['config']}): " + ', '.join(f'{k}={v}' for k, v in s.items()))
  grid = grid_table(runs)
  if grid:
    g = report['grid']
    seeds = sorted({r['seed'] for r in runs if r['group'] == 'grid' and r['status'] == 'ok'})
    lines += ['', f"## MQAR accuracy against width and pairs ({g['task']}, mean ± std over seeds "
              f"{seeds})", '', harness.markdown_table(
                  ['kind', 'width'] + [f'{p} pairs' for p in g['pairs']],
                  [[k, w] + [_cell(grid[(k, w, p)], 'eval_accuracy') if (k, w, p) in grid else '-'
                             for p in g['pairs']]
                   for k in GRID_KINDS for w in g['widths']]), '']
    base = {r['extra']['num_pairs']: r['baselines'].get('baseline_mode_guess_accuracy') for r in runs
            if r['group'] == 'grid' and r['status'] == 'ok'}
    lines.append('No-recall baseline (mode guess) per pairs: ' + ', '.join(
        f'{p}: {v * 100:.1f}%' for p, v in sorted(base.items()) if v is not None))
  lines += ['', '## All runs', '', harness.markdown_table(
      ['group', 'task', 'kind', 'seed', 'changed', 'status', 'eval loss', 'eval accuracy', 'steps',
       'wall s', 'note'],
      [[r['group'], r['task'], r['kind'], r['seed'],
        ' '.join(f"{k.split('.')[-1]}={v}" for k, v in r['extra'].items()
                 if k in ('model.emb_dim', 'num_pairs')),
        r['status'], harness.fmt(r.get('eval_loss'), 4), harness.fmt(r.get('eval_accuracy'), 4),
        r.get('steps', '-'), harness.fmt(r.get('wall_s')), r.get('reason', '')] for r in runs])]
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- figures


def figure_scores(report):
  """One panel per task: each kind's score (mean, std, seeds as dots), baselines as lines."""
  plt = harness.pyplot()
  tasks = list(dict.fromkeys(r['task'] for r in report['summary']))
  fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.2 * max(len(tasks), 1), 4),
                           layout='constrained', squeeze=False)
  runs = [r for r in report['runs'] if r['group'] == 'main' and r['status'] == 'ok']
  for ax, task in zip(axes[0], tasks):
    metric = TASKS[task]['metric']
    rows = [r for r in report['summary'] if r['task'] == task]
    for i, r in enumerate(rows):
      if r[metric]['mean'] is not None:
        ax.errorbar(i, r[metric]['mean'], yerr=r[metric]['std'] or 0, fmt='o', ms=9, capsize=5,
                    color=f'C{KINDS.index(r["kind"])}')
      ys = [x[metric] for x in runs if (x['task'], x['kind']) == (task, r['kind'])]
      ax.plot([i + 0.15] * len(ys), ys, 'k.', ms=4)
    base = next((r['baselines'] for r in rows if r['baselines']), {})
    for j, (key, label) in enumerate(BASELINES[metric]):
      if key in base:
        ax.axhline(base[key], color='k', ls=('--', ':', '-.')[j], lw=1, label=label)
    ax.set_xticks(range(len(rows)), [r['kind'] for r in rows], rotation=20)
    ax.set_title(f"{task}: {metric.replace('_', ' ')}")
    if metric == 'eval_accuracy':
      ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.5, len(rows) - 0.3)
    ax.legend(fontsize=7, loc='lower right' if metric == 'eval_accuracy' else 'upper right')
    ax.grid(True, axis='y', alpha=0.3)
  fig.suptitle(f"Attention kinds at equal steps, local mixing on for all ({report['run']} run)")
  return fig


def figure_grid(report):
  """Zoology-style: accuracy against width, one line per kind, one panel per number of pairs."""
  plt = harness.pyplot()
  g, grid = report['grid'], grid_table(report['runs'])
  fig, axes = plt.subplots(1, len(g['pairs']), figsize=(4 * len(g['pairs']), 3.6),
                           layout='constrained', squeeze=False, sharey=True)
  base = {r['extra']['num_pairs']: r['baselines'].get('baseline_mode_guess_accuracy')
          for r in report['runs'] if r['group'] == 'grid' and r['status'] == 'ok'}
  for ax, p in zip(axes[0], g['pairs']):
    for kind in GRID_KINDS:
      pts = [(w, grid[(kind, w, p)]['mean'], grid[(kind, w, p)]['std'] or 0)
             for w in g['widths'] if (kind, w, p) in grid]
      if pts:
        ws, means, stds = zip(*pts)
        ax.errorbar(ws, means, yerr=stds, marker='o', capsize=4, color=f'C{KINDS.index(kind)}',
                    label=kind)
    if base.get(p) is not None:
      ax.axhline(base[p], color='k', ls=':', lw=1, label='no recall (mode guess)')
    ax.set_xscale('log', base=2)
    ax.set_xticks(g['widths'], [str(w) for w in g['widths']])
    ax.set_xlabel('model width')
    ax.set_title(f'{p} key-value pairs')
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
  axes[0][0].set_ylabel('MQAR accuracy')
  axes[0][0].legend(fontsize=8)
  fig.suptitle(f"MQAR ({g['task']}) accuracy against model width ({report['run']} run)")
  return fig


def figure_curves(report):
  """Eval loss against steps on the text tasks, unigram and bigram baselines as lines."""
  plt = harness.pyplot()
  tasks = [t for t in dict.fromkeys(r['task'] for r in report['summary'])
           if TASKS[t]['metric'] == 'eval_loss']
  fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5.5 * max(len(tasks), 1), 4),
                           layout='constrained', squeeze=False)
  runs = [r for r in report['runs'] if r['group'] == 'main' and r['status'] == 'ok']
  for ax, task in zip(axes[0], tasks):
    base = {}
    for kind in KINDS:
      mine = [r for r in runs if (r['task'], r['kind']) == (task, kind)]
      for j, r in enumerate(mine):
        steps, losses, _ = zip(*r['curve'])
        ax.plot(steps, losses, marker='o', ms=3, color=f'C{KINDS.index(kind)}', alpha=0.8,
                label=kind if j == 0 else None)
        base = base or r['baselines']
    for j, (key, label) in enumerate(BASELINES['eval_loss']):
      if key in base:
        ax.axhline(base[key], color='k', ls=('--', ':', '-.')[j], lw=1, label=f'{label} baseline')
    ax.set_xlabel('step')
    ax.set_ylabel('eval loss (nats per scored byte)')
    ax.set_title(task)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f"Eval loss during training, every seed ({report['run']} run)")
  return fig


# ----------------------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='smoke run: tiny models, 2 steps')
  p.add_argument('--out', help='results folder (default benchmarks/results/quality, --quick benchmarks/quick/quality)')
  p.add_argument('--tasks', default=','.join(TASKS), help=f'comma-separated subset of {list(TASKS)}')
  p.add_argument('--seeds', help='comma-separated seeds of the main study (default 0,1,2; quick 0)')
  p.add_argument('--no_grid', dest='grid', action='store_false', help='skip the width x pairs grid')
  p.add_argument('--replot', metavar='JSON',
                 help="only rewrite the .md and .png files from a finished run's quality.json")
  p.add_argument('--time_budget_s', type=float, default=80 * 60,
                 help='runs expected to end after this are skipped')
  p.add_argument('--resume', action='store_true',
                 help="reuse runs whose <out>/tmp/<run>/run.json a previous invocation wrote")
  args = p.parse_args(argv)
  bad = [t for t in args.tasks.split(',') if t not in TASKS]
  if bad:
    p.error(f'unknown task(s) {bad} in --tasks; valid: {list(TASKS)}')
  seeds = args.seeds or ('0' if args.quick else '0,1,2')
  try:
    args.seeds = [int(s) for s in seeds.split(',')]
  except ValueError:
    p.error(f'--seeds={seeds!r} must be comma-separated integers, e.g. 0,1,2')
  return args


def _enable_compilation_cache(path):
  """Persistent XLA cache: runs that differ only by seed compile the same programs."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def write_report(out, report):
  """quality.json, .md and the three figures into `out`; returns their paths."""
  paths = harness.write_outputs(out, 'quality', report, markdown(report), figure_scores(report))
  for name, fig in (('quality_curves', figure_curves(report)), ('quality_grid', figure_grid(report))):
    paths[name] = os.path.join(out, name + '.png')
    fig.savefig(paths[name], dpi=110, bbox_inches='tight')
  return paths


def main(argv):
  args = parse_args(argv)
  if args.replot:
    with open(args.replot) as f:
      report = json.load(f)
    print('\n'.join(write_report(os.path.dirname(os.path.abspath(args.replot)), report).values()))
    return
  if args.quick:
    os.environ.update(harness.quick_env())  # Before JAX starts: see harness.quick_env.
  out = args.out or harness.default_out('quality', args.quick)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # One line per run here, not train's per-step lines.
  _enable_compilation_cache(os.path.join(out, 'tmp', 'jax_cache'))
  host = harness.host_info()
  tic = time.time()
  runs = sweep(args, out)
  mode = 'quick' if args.quick else 'full'
  report = {
      'benchmark': 'quality', 'run': mode,
      'command': 'python benchmarks/quality.py ' + ' '.join(argv), 'host': host,
      'device': harness.device_info(), 'seeds': args.seeds,
      'settings': {t: TASKS[t][mode] for t in args.tasks.split(',')},
      'grid': GRID[mode], 'planned': len(runs), 'runs': runs, 'summary': summarize(runs),
      'elapsed_s': round(time.time() - tic, 1), 'load_average_end': harness.load_average(),
  }
  print('\n'.join(write_report(out, report).values()))
  failed = [r for r in runs if r['status'] == 'failed']
  if failed:
    print(f'{len(failed)} run(s) failed: ' + '; '.join(
        f"{r['task']} {r['kind']} seed {r['seed']}: {r['reason']}" for r in failed), file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  main(sys.argv[1:])
