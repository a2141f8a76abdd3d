r"""Model quality at equal training steps: MLM validation loss and ListOps accuracy per attention.

  python benchmarks/quality.py            # full: MLM at seq_len 1024, ListOps (reduced lengths)
  python benchmarks/quality.py --quick    # smoke run: tiny models, a few steps

Every run is `linformer_jax.trainer.train_and_evaluate` on a config file
(configs/mlm.py, configs/listops.py) with a few keys overridden, so a row here
is reproducible with train.py and the same --config.* flags (printed in the
JSON). Metrics come from the run's metrics.jsonl: the last eval_loss /
eval_accuracy (fixed eval set) and the learning curve. Runs are ordered seed by
seed, so a time budget that runs out cuts whole extra seeds first.
Outputs (--out, default benchmarks/results/quality/, --quick benchmarks/quick/quality/): quality.json,
.md and .png; run directories (checkpoints) go to <out>/tmp/, which git ignores.
"""
import argparse
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> config overrides, per task; the pair the MLM target compares comes first,
# so that a time budget cutting a later seed short still repeats it.
MLM_VARIANTS = {
    'softmax': {'model.attention': 'softmax'},
    'linear': {'model.attention': 'linear'},
    'elu_linear': {'model.attention': 'elu_linear'},
    'linformer_k64': {'model.attention': 'linformer', 'model.linformer_k': 64},
    'linformer_k256': {'model.attention': 'linformer', 'model.linformer_k': 256},
}
LISTOPS_VARIANTS = {
    'softmax': {'model.attention': 'softmax'},
    'linear': {'model.attention': 'linear'},
    'elu_linear': {'model.attention': 'elu_linear'},
    'linformer_k128': {'model.attention': 'linformer', 'model.linformer_k': 128},
}

# Shared by every run of a task (full mode), sized for ~30 minutes on 2 CPU cores.
# MLM: configs/mlm.py's small model at seq_len 1024, half its 300 steps. ListOps:
# LRA's lengths cut from 500-2000 to 100-500 tokens and far fewer steps than LRA's
# 5000 (both would take hours of softmax training on 2 cores).
FULL = {
    'mlm': {'seq_len': 1024, 'batch_size': 8, 'num_train_steps': 150, 'warmup_steps': 15,
            'num_eval_batches': 8},
    'listops': {'listops_min_len': 100, 'listops_max_len': 500, 'batch_size': 32,
                'num_train_steps': 200, 'warmup_steps': 20, 'num_train_examples': 10000,
                'num_eval_examples': 1000, 'num_eval_batches': 16},
}
_TINY_MODEL = {'model.num_layers': 1, 'model.num_heads': 2, 'model.emb_dim': 32, 'model.mlp_dim': 64}
QUICK = {
    'mlm': dict(_TINY_MODEL, seq_len=64, batch_size=2, num_train_steps=3, warmup_steps=1,
                num_eval_batches=1),
    'listops': dict(_TINY_MODEL, listops_min_len=10, listops_max_len=64, batch_size=4,
                    num_train_steps=3, warmup_steps=1, num_train_examples=32,
                    num_eval_examples=16, num_eval_batches=1),
}
# A smoke run compiles a train and an eval step per run (seconds each on 2 cores),
# so it trains only the pair the MLM target compares, and one ListOps model.
QUICK_VARIANTS = {'mlm': ('softmax', 'linear'), 'listops': ('linear',)}
CONFIG_FILES = {'mlm': 'configs/mlm.py', 'listops': 'configs/listops.py'}


def overrides_for(task, variant, seed, args):
  """Flattened config overrides of one run."""
  variants = MLM_VARIANTS if task == 'mlm' else LISTOPS_VARIANTS
  o = dict((QUICK if args.quick else FULL)[task])
  o.update(variants[variant])
  steps = args.mlm_steps if task == 'mlm' else args.listops_steps
  if steps:
    o['num_train_steps'] = steps
    o['warmup_steps'] = max(1, steps // 10)
  steps = o['num_train_steps']
  o.update({'seed': seed, 'log_every_steps': max(1, steps // 10),
            # A few evaluations give the learning curve; the last is the result.
            'eval_every_steps': max(1, steps // (1 if args.quick else 4)),
            'checkpoint_every_steps': steps, 'keep_checkpoints': 1})
  if task == 'mlm' and args.data_dir:
    o['data_dir'] = args.data_dir
  return o


def run_one(task, variant, seed, workdir, args):
  from linformer_jax import config_lib  # pylint: disable=g-import-not-at-top
  from linformer_jax import metrics  # pylint: disable=g-import-not-at-top
  from linformer_jax import trainer  # pylint: disable=g-import-not-at-top
  o = overrides_for(task, variant, seed, args)
  config = config_lib.load(os.path.join(REPO, CONFIG_FILES[task]), o)
  shutil.rmtree(workdir, ignore_errors=True)  # A stale checkpoint would be resumed.
  tic = time.time()
  trainer.train_and_evaluate(config, workdir)
  wall = time.time() - tic
  records = metrics.read_metrics(workdir)
  evals = [r for r in records if 'eval_loss' in r]
  trains = [r for r in records if 'train_loss' in r]
  if not evals:
    raise RuntimeError(f'no eval record in {workdir}/metrics.jsonl')
  last = evals[-1]
  return {'status': 'ok', 'eval_loss': last['eval_loss'], 'eval_accuracy': last['eval_accuracy'],
          'train_loss': trains[-1]['train_loss'] if trains else None, 'steps': last['step'],
          'wall_s': wall, 'curve': [(r['step'], r['eval_loss'], r['eval_accuracy']) for r in evals],
          'command': (f'python train.py --config={CONFIG_FILES[task]} --workdir=... ' +
                      ' '.join(f'--config.{k}={v}' for k, v in o.items()))}


def sweep(args, out):
  tasks = [t for t in ('mlm', 'listops') if t in args.tasks.split(',')]
  variants = {'mlm': list(MLM_VARIANTS), 'listops': list(LISTOPS_VARIANTS)}
  if args.quick:
    variants = QUICK_VARIANTS
  if args.variants:
    keep = args.variants.split(',')
    variants = {t: [v for v in vs if v in keep] for t, vs in variants.items()}
  plan = [(seed, task, variant) for seed in args.seeds for task in tasks
          for variant in variants[task]]
  start, results, walls = time.time(), [], {}
  for i, (seed, task, variant) in enumerate(plan):
    row = {'task': task, 'variant': variant, 'seed': seed}
    remaining = args.time_budget_s - (time.time() - start)
    # Expect the time this variant (or, on the first seed, the slowest of its task) took.
    expected = walls.get((task, variant)) or max(
        (w for (t, _), w in walls.items() if t == task), default=0.0)
    if expected > remaining:
      row.update(status='skipped',
                 reason=f'time budget: {max(remaining, 0):.0f} s left, a run takes ~{expected:.0f} s')
    else:
      try:
        row.update(run_one(task, variant, seed,
                           os.path.join(out, 'tmp', f'{task}_{variant}_seed{seed}'), args))
        walls[(task, variant)] = row['wall_s']
      except Exception as e:  # pylint: disable=broad-except
        row.update(status='failed', reason=f'{type(e).__name__}: {str(e)[:300]}')
    results.append(row)
    status = (f"eval_loss {row['eval_loss']:.4f}, eval_accuracy {row['eval_accuracy']:.4f}, "
              f"{row['wall_s']:.0f} s" if row['status'] == 'ok' else f"{row['status']}: {row['reason']}")
    print(f'[{i + 1}/{len(plan)} {time.time() - start:.0f}s] {task} {variant} seed {seed}: {status}',
          flush=True)
  return results


# ----------------------------------------------------------------------------- analysis


def summarize(results):
  """Per (task, variant): mean, sample standard deviation, min and max over the seeds run."""
  summary = []
  for task, variant in dict.fromkeys((r['task'], r['variant']) for r in results):
    ok = [r for r in results if (r['task'], r['variant']) == (task, variant) and r['status'] == 'ok']
    row = {'task': task, 'variant': variant, 'seeds': [r['seed'] for r in ok]}
    for field in ('eval_loss', 'eval_accuracy'):
      xs = [r[field] for r in ok]
      mean = sum(xs) / len(xs) if xs else None
      std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
      row[field] = {'mean': mean, 'std': std, 'min': min(xs, default=None), 'max': max(xs, default=None)}
    summary.append(row)
  return summary


def targets(summary):
  by = {(s['task'], s['variant']): s for s in summary}
  lin, soft = by.get(('mlm', 'linear')), by.get(('mlm', 'softmax'))
  if lin and soft and lin['eval_loss']['mean'] is not None and soft['eval_loss']['mean'] is not None:
    rel = lin['eval_loss']['mean'] / soft['eval_loss']['mean'] - 1
    return [{'target': 'MLM: linear validation loss within 5% of softmax at equal steps',
             'value': rel, 'met': rel <= 0.05,
             'detail': f"{lin['eval_loss']['mean']:.4f} vs {soft['eval_loss']['mean']:.4f} "
                       f"(mean over seeds {lin['seeds']} / {soft['seeds']})"}]
  return [{'target': 'MLM: linear validation loss within 5% of softmax at equal steps',
           'value': None, 'met': None, 'detail': 'not measured'}]


def _mean_std(stat, digits=4):
  if stat['mean'] is None:
    return '-'
  return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat['std'] is not None else '')


def markdown(report):
  lines = [f"# Quality at equal steps ({report['run']})", '',
           f"Machine: {harness.machine_line(report['host'], report['device'])}; load at end "
           f"{report['load_average_end']}.", '']
  for task, title in (('mlm', 'MLM on stdlib_docs'), ('listops', 'ListOps')):
    rows = [r for r in report['summary'] if r['task'] == task]
    if not rows:
      continue
    s = report['settings'][task]
    lines += [f'## {title}', '', 'Settings: ' + ', '.join(f'{k}={v}' for k, v in s.items()) +
              f" (config file {CONFIG_FILES[task]}; model keys not listed are the file's).", '',
              harness.markdown_table(
                  ['attention', 'seeds', 'eval loss (mean ± std)', 'eval accuracy (mean ± std)',
                   'min-max accuracy'],
                  [[r['variant'], len(r['seeds']), _mean_std(r['eval_loss']),
                    _mean_std(r['eval_accuracy']),
                    f"{harness.fmt(r['eval_accuracy']['min'])}-{harness.fmt(r['eval_accuracy']['max'])}"]
                   for r in rows]), '']
  lines += ['## Targets', '', harness.markdown_table(
      ['target', 'measured', 'met', 'detail'],
      [[t['target'], harness.fmt(t['value']), {True: 'yes', False: 'no', None: 'n/a'}[t['met']],
        t['detail']] for t in report['targets']]), '']
  lines += ['## All runs', '', harness.markdown_table(
      ['task', 'attention', 'seed', 'status', 'eval loss', 'eval accuracy', 'train loss', 'steps',
       'wall s', 'note'],
      [[r['task'], r['variant'], r['seed'], r['status'], harness.fmt(r.get('eval_loss'), 4),
        harness.fmt(r.get('eval_accuracy'), 4), harness.fmt(r.get('train_loss'), 4),
        r.get('steps', '-'), harness.fmt(r.get('wall_s')), r.get('reason', '')]
       for r in report['runs']])]
  return '\n'.join(lines)


def figure(report):
  plt = harness.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout='constrained')
  runs = [r for r in report['runs'] if r['status'] == 'ok']
  for task, ax, field, title in (('mlm', axes[0], 'eval_loss', 'MLM validation loss'),
                                 ('listops', axes[1], 'eval_accuracy', 'ListOps accuracy')):
    rows = [r for r in report['summary'] if r['task'] == task]
    for i, r in enumerate(rows):
      if r[field]['mean'] is not None:
        ax.bar(i, r[field]['mean'], yerr=r[field]['std'] or 0, color=f'C{i}', alpha=0.6, capsize=4)
      ys = [x[field] for x in runs if (x['task'], x['variant']) == (task, r['variant'])]
      ax.plot([i] * len(ys), ys, 'k.', ms=6)
    ax.set_xticks(range(len(rows)), [r['variant'] for r in rows], rotation=20)
    ax.set_title(title + ' (mean, std, seeds)')
    ax.grid(True, axis='y', alpha=0.3)
  for i, variant in enumerate(MLM_VARIANTS):
    for j, r in enumerate(x for x in runs if (x['task'], x['variant']) == ('mlm', variant)):
      steps, losses, _ = zip(*r['curve'])
      axes[2].plot(steps, losses, marker='o', ms=3, color=f'C{i}', label=variant if j == 0 else None)
  axes[2].set_xlabel('step')
  axes[2].set_title('MLM validation loss during training')
  axes[2].grid(True, alpha=0.3)
  if runs:
    axes[2].legend(fontsize=8)
  fig.suptitle(f"Quality at equal steps ({report['device'].get('device_kind', '?')}, {report['run']})")
  return fig


# ----------------------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='smoke run: tiny models, a few steps')
  p.add_argument('--out', help='results folder (default benchmarks/results/quality, --quick benchmarks/quick/quality)')
  p.add_argument('--tasks', default='mlm,listops', help='comma-separated: mlm, listops')
  p.add_argument('--seeds', default='0', help='comma-separated seeds (each one a full sweep)')
  p.add_argument('--variants', help='comma-separated subset of attentions, e.g. softmax,linear')
  p.add_argument('--mlm_steps', type=int, help=f"override ({FULL['mlm']['num_train_steps']} full)")
  p.add_argument('--listops_steps', type=int,
                 help=f"override ({FULL['listops']['num_train_steps']} full)")
  p.add_argument('--data_dir', help="TFDS data dir for stdlib_docs (default: configs/mlm.py's)")
  p.add_argument('--time_budget_s', type=float, default=30 * 60,
                 help='runs expected to end after this are skipped')
  args = p.parse_args(argv)
  args.seeds = [int(s) for s in args.seeds.split(',')]
  return args


def main(argv):
  args = parse_args(argv)
  if args.quick:
    # Before JAX starts: see harness.quick_env.
    os.environ.update(harness.quick_env())
  out = args.out or harness.default_out('quality', args.quick)
  host = harness.host_info()
  tic = time.time()
  results = sweep(args, out)
  summary = summarize(results)
  report = {
      'benchmark': 'quality', 'run': 'quick' if args.quick else 'full',
      'command': 'python benchmarks/quality.py ' + ' '.join(argv), 'host': host,
      'device': harness.device_info(),
      'settings': {t: (QUICK if args.quick else FULL)[t] for t in ('mlm', 'listops')},
      'planned': len(results), 'runs': results, 'summary': summary, 'targets': targets(summary),
      'elapsed_s': round(time.time() - tic, 1), 'load_average_end': harness.load_average(),
  }
  for task, steps in (('mlm', args.mlm_steps), ('listops', args.listops_steps)):
    if steps:
      report['settings'][task] = dict(report['settings'][task], num_train_steps=steps)
  paths = harness.write_outputs(out, 'quality', report, markdown(report), figure(report))
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
