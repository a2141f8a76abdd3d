r"""The hybrid configs against their single-kind peers: configs/{lm,mlm}_hybrid.py at equal depth.

  python benchmarks/hybrid_configs.py --tasks lm --seeds 0,1,2     # 4 kinds x 3 seeds
  python benchmarks/hybrid_configs.py --tasks mlm --seeds 0
  python benchmarks/hybrid_configs.py report                       # tables from the runs so far
  python benchmarks/hybrid_configs.py --quick                      # smoke run: tiny models, 3 steps

Each task's hybrid config (one softmax layer, then three of the paper's linear
attention) trains beside the task's default config with the same four layers of
one kind: 'linear' (the paper's attention), 'softmax' and 'none' (the
attention-free control, local convolution and MLPs only). Every run is a fresh
`python train.py` process at the config's own budget; its final eval loss and
accuracy, step-0 baselines, wall time and the trainer's median tokens/s are
written to <out>/runs/<task>_<kind>_seed_<s>.json, and a run whose file exists is
not run again (resumable: stop it and run the same command). The report gives
mean ± std over the seeds run. Training workdirs go to <out>/tmp/ (git-ignored)
and are removed after each run. Outputs: --out, default
benchmarks/results/hybrid_configs/ (--quick: benchmarks/quick/hybrid_configs/).
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ('lm', 'mlm')
LAYERS = 4  # the hybrid pattern's length: every kind gets this depth
# kind -> (config file for the task, overrides): the peers are the task's default config.
KINDS = {
    'hybrid': ('configs/{task}_hybrid.py', {}),
    'linear': ('configs/{task}.py', {'model.num_layers': LAYERS}),
    'softmax': ('configs/{task}.py', {'model.num_layers': LAYERS, 'model.attention': 'softmax'}),
    'none': ('configs/{task}.py', {'model.num_layers': LAYERS, 'model.attention': 'none'}),
}
QUICK = {'num_train_steps': 3, 'warmup_steps': 1, 'log_every_steps': 1, 'eval_every_steps': 3,
         'checkpoint_every_steps': 3, 'num_eval_batches': 1, 'batch_size': 2, 'seq_len': 64,
         'model.emb_dim': 32, 'model.mlp_dim': 64, 'max_train_sequences': 64}


def command(task, kind, seed, quick, data_dir=None):
  """train.py's config path and --config.* flags for one run."""
  path, over = KINDS[kind]
  over = {**over, 'seed': seed, **(QUICK if quick else {}), **({'data_dir': data_dir} if data_dir else {})}
  return path.format(task=task), [f'--config.{k}={v}' for k, v in over.items()]


def train(task, kind, seed, quick, workdir, data_dir=None):
  """One run in a fresh process: final eval loss/accuracy, baselines, tokens/s, wall."""
  config, flags = command(task, kind, seed, quick, data_dir)
  cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--config={os.path.join(REPO, config)}',
         f'--workdir={workdir}'] + flags
  wall, records, reason = harness.run_train(cmd, workdir, cwd=REPO)
  row = {'task': task, 'kind': kind, 'seed': seed, 'wall_s': round(wall, 1),
         'command': f'python train.py --config={config} ' + ' '.join(flags)}
  if reason:
    return dict(row, status='failed', reason=reason)
  evals = [r for r in records if 'eval_loss' in r]
  speeds = [r['tokens_per_sec'] for r in records if 'tokens_per_sec' in r]
  base = records[0] if records and records[0].get('step') == 0 else {}
  return dict(row, status='ok', steps=evals[-1]['step'], eval_loss=evals[-1]['eval_loss'],
              eval_accuracy=evals[-1]['eval_accuracy'],
              curve=[(r['step'], r['eval_loss']) for r in evals],
              tokens_per_sec=harness.median(speeds[1:] or speeds),
              baselines={k: v for k, v in base.items() if k.startswith('baseline_')})


def _mean_std(xs, digits):
  if not xs:
    return '-'
  if len(xs) == 1:
    return f'{xs[0]:.{digits}f}'
  return f'{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}'


def markdown(runs, host_line):
  """One table per task: each kind's mean ± std over its seeds, beside the baselines."""
  parts = ['# Hybrid configs against single-kind peers at equal depth',
           f'{LAYERS} layers each; every run at its config\'s own steps and batch; mean ± std '
           f'over the seeds run. {host_line}']
  for task in TASKS:
    mine = [r for r in runs if r['task'] == task and r['status'] == 'ok']
    if not mine:
      continue
    rows = []
    for kind in KINDS:
      rs = sorted((r for r in mine if r['kind'] == kind), key=lambda r: r['seed'])
      if not rs:
        continue
      rows.append([kind, _mean_std([r['eval_loss'] for r in rs], 3),
                   _mean_std([100 * r['eval_accuracy'] for r in rs], 1),
                   ', '.join(f"{r['eval_loss']:.3f}" for r in rs), len(rs),
                   _mean_std([r['tokens_per_sec'] for r in rs], 0),
                   _mean_std([r['wall_s'] for r in rs], 0)])
    base = next((r['baselines'] for r in mine if r['baselines']), {})
    parts += [f"## {task} (`{command(task, 'hybrid', 0, False)[0]}`)",
              harness.markdown_table(['kind', 'eval loss (nats/byte)', 'eval accuracy %',
                                      'per seed', 'seeds', 'train tokens/s', 'wall s'], rows),
              'Baselines: ' + ', '.join(f'{k[len("baseline_"):-len("_loss")]} {v:.3f}'
                                        for k, v in sorted(base.items()) if k.endswith('_loss'))]
  return '\n\n'.join(parts)


def _csv(text, valid, flag):
  """The comma-separated items of a flag, each one of `valid`."""
  items = [x.strip() for x in text.split(',') if x.strip()]
  bad = [x for x in items if x not in valid]
  if bad or not items:
    raise ValueError(f'{flag}={text!r}: {bad or "empty"} not valid; valid: {list(valid)}')
  return items


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('mode', nargs='?', default='train', choices=('train', 'report'))
  p.add_argument('--tasks', default=','.join(TASKS), help=f'comma-separated subset of {TASKS}')
  p.add_argument('--kinds', default=','.join(KINDS), help=f'comma-separated subset of {tuple(KINDS)}')
  p.add_argument('--seeds', default='0', help='comma-separated seeds (non-negative integers)')
  p.add_argument('--quick', action='store_true', help='smoke run: tiny models, 3 steps')
  p.add_argument('--data_dir', help="train.py's config.data_dir (default: the config's own)")
  p.add_argument('--out', help='results folder (default benchmarks/results/hybrid_configs)')
  args = p.parse_args(argv)
  try:
    tasks = _csv(args.tasks, TASKS, '--tasks')
    kinds = _csv(args.kinds, KINDS, '--kinds')
  except ValueError as e:
    p.error(str(e))
  seeds = [x.strip() for x in args.seeds.split(',') if x.strip()]
  if not seeds or not all(x.isdigit() for x in seeds):
    p.error(f'--seeds={args.seeds!r}: seeds must be non-negative integers, e.g. 0,1,2')
  seeds = [int(x) for x in seeds]
  out = args.out or harness.default_out('hybrid_configs', args.quick)
  os.makedirs(os.path.join(out, 'runs'), exist_ok=True)
  failed = []
  if args.mode == 'train':
    for seed in seeds:
      for task in tasks:
        for kind in kinds:
          path = os.path.join(out, 'runs', f'{task}_{kind}_seed_{seed}.json')
          if os.path.exists(path):
            continue
          host = harness.host_info()  # before the run: its load average is the machine's
          row = dict(train(task, kind, seed, args.quick, os.path.join(out, 'tmp', 'run'),
                           args.data_dir), host=host)
          print(json.dumps({k: v for k, v in row.items() if k != 'curve'}), flush=True)
          if row['status'] == 'ok':
            with open(path, 'w') as f:
              json.dump(row, f, indent=1)
              f.write('\n')
          else:  # reported, not stored: running the command again retries it
            failed.append(row)
  runs = harness.read_json_files(os.path.join(out, 'runs'))
  hosts = sorted({f"{r['host']['cpu_model']}, {r['host']['cpu_cores']} cores" for r in runs})
  md = markdown(runs, f"Machines: {'; '.join(hosts) or '-'}; one run at a time; each run's "
                'command, machine and load average in runs/*.json.')
  with open(os.path.join(out, 'hybrid_configs.md'), 'w') as f:
    f.write(md + '\n')
  print(md)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
