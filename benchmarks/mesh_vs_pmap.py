r"""MLM training tokens/s: the pmap path against the mesh path's layouts, same devices and batch.

  python benchmarks/mesh_vs_pmap.py            # configs/mlm.py on 8 host devices, 5 layouts
  python benchmarks/mesh_vs_pmap.py --quick    # smoke run: a tiny model, 2 layouts, a few steps

Each layout trains configs/mlm.py (global batch 8 rows of 1024 bytes, so one
row per device) in a fresh `python train.py` process with
XLA_FLAGS=--xla_force_host_platform_device_count=8, for --steps steps (default
100, logged every 10). Tokens/s is the median of the trainer's own
tokens_per_sec windows (compilation and evaluation are outside them), leaving
out the first window. Layouts: config.parallelism='pmap', then
parallelism='mesh' with config.mesh data:8 (the same data parallelism under jit),
fsdp:8 (parameters and optimizer state split 8 ways), data:2,fsdp:2,sequence:2
and sequence:8 (each row split over the devices). The final training loss is
listed beside each: dropout is off in configs/mlm.py, so every layout computes
the same steps and the losses agree to rounding.

On a CPU the 8 devices share the host's cores, so this measures what each
layout's program costs on the same hardware, not how it scales (README,
"Scaling out"). Outputs (--out, default benchmarks/results/mesh_vs_pmap/,
--quick benchmarks/quick/mesh_vs_pmap/): mesh_vs_pmap.json and mesh_vs_pmap.md;
training workdirs in <out>/tmp/ (git-ignored), removed after each run.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

DEVICES = 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/mlm.py'
LAYOUTS = ('pmap', 'data:8', 'fsdp:8', 'data:2,fsdp:2,sequence:2', 'sequence:8')
QUICK_LAYOUTS = ('pmap', 'fsdp:8')
QUICK_MODEL = {'seq_len': 64, 'model.num_layers': 1, 'model.emb_dim': 32, 'model.mlp_dim': 64,
               'model.num_heads': 2}


def overrides(layout, steps, log_every, quick):
  """train.py's --config.* flags for one layout."""
  o = {'num_train_steps': steps, 'warmup_steps': max(1, steps // 10), 'log_every_steps': log_every,
       'eval_every_steps': steps, 'checkpoint_every_steps': steps, 'num_eval_batches': 1,
       **(QUICK_MODEL if quick else {})}
  if layout == 'pmap':
    o['parallelism'] = 'pmap'
  else:
    axes = dict(a.split(':') for a in layout.split(','))
    o['parallelism'] = 'mesh'
    o['mesh'] = ','.join(f'{a}:{axes.get(a, 1)}' for a in ('data', 'fsdp', 'sequence'))
  return o


def run(layout, steps, log_every, quick, workdir):
  """Trains one layout in a fresh process: its tokens/s windows, final loss and wall time."""
  flags = [f'--config.{k}={v}' for k, v in overrides(layout, steps, log_every, quick).items()]
  cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--config={os.path.join(REPO, CONFIG)}',
         f'--workdir={workdir}'] + flags
  env = dict(os.environ, XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                                    f' --xla_force_host_platform_device_count={DEVICES}').strip())
  wall, records, reason = harness.run_train(cmd, workdir, env=env)
  row = {'layout': layout, 'command': f'python train.py --config={CONFIG} ' + ' '.join(flags),
         'wall_s': round(wall, 1)}
  if reason:
    return dict(row, status='failed', reason=reason)
  windows = [r['tokens_per_sec'] for r in records if 'tokens_per_sec' in r]
  losses = [r['train_loss'] for r in records if 'train_loss' in r]
  timed = windows[1:] or windows
  return dict(row, status='ok', tokens_per_sec=harness.median(timed), windows=windows,
              final_train_loss=losses[-1] if losses else None)


def markdown(report):
  rows = report['results']
  pmap = next((r.get('tokens_per_sec') for r in rows if r['layout'] == 'pmap'), None)
  table = [[r['layout'] if r['layout'] == 'pmap' else f"mesh {r['layout']}",
            harness.fmt(r.get('tokens_per_sec'), 4),
            harness.fmt(pmap / r['tokens_per_sec']) if pmap and r.get('tokens_per_sec') else '-',
            harness.fmt(r.get('final_train_loss'), 4), r['wall_s'],
            r['status'] if r['status'] == 'ok' else f"{r['status']}: {r['reason']}"]
           for r in rows]
  return '\n\n'.join([
      '# MLM training tokens/s: pmap against mesh layouts',
      f"`{report['command'].strip()}` on {harness.machine_line(report['host'], report['device'])} "
      f'({DEVICES} host devices faked with XLA_FLAGS; they share the cores, so this compares '
      f"programs, not scaling). {CONFIG}{' (--quick: a tiny model)' if report['run'] == 'quick' else ''}, "
      f"global batch 8, {report['steps']} steps; tokens/s = median of the trainer's windows of "
      f"{report['log_every']} steps after the first.",
      harness.markdown_table(['layout', 'tokens/s', 'time per token ÷ pmap\'s', 'final train loss',
                              'process wall s', 'status'], table)])


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='smoke run: tiny model, 2 layouts, 4 steps')
  p.add_argument('--steps', type=int, help='training steps per layout (default 100; --quick 4)')
  p.add_argument('--layouts', help=f"comma-separated subset of {'; '.join(LAYOUTS)} "
                 "(separate layouts with ';')")
  p.add_argument('--out', help='results folder (default benchmarks/results/mesh_vs_pmap)')
  args = p.parse_args(argv)
  layouts = tuple(args.layouts.split(';')) if args.layouts else (
      QUICK_LAYOUTS if args.quick else LAYOUTS)
  bad = [l for l in layouts if l not in LAYOUTS]
  if bad:
    p.error(f'unknown layout(s) {bad} in --layouts; valid: {list(LAYOUTS)}')
  steps = args.steps or (4 if args.quick else 100)
  if steps < 2:
    p.error(f'--steps must be at least 2 (one window to drop, one to time), got {steps}')
  log_every = max(1, steps // 10)
  out = args.out or harness.default_out('mesh_vs_pmap', args.quick)
  os.makedirs(out, exist_ok=True)
  # The parent imports JAX only for the device line; the same flags as the workers.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={DEVICES}').strip()
  host, device = harness.host_info(), harness.device_info()
  results = []
  for layout in layouts:
    row = run(layout, steps, log_every, args.quick, os.path.join(out, 'tmp', 'run'))
    print(json.dumps(row), flush=True)
    results.append(row)
  report = {'benchmark': 'mesh_vs_pmap', 'run': 'quick' if args.quick else 'full',
            'command': 'python benchmarks/mesh_vs_pmap.py ' + ' '.join(argv), 'host': host,
            'device': device, 'steps': steps, 'log_every': log_every, 'results': results}
  md = markdown(report)
  with open(os.path.join(out, 'mesh_vs_pmap.json'), 'w') as f:
    json.dump(report, f, indent=1)
    f.write('\n')
  with open(os.path.join(out, 'mesh_vs_pmap.md'), 'w') as f:
    f.write(md + '\n')
  print(md)
  return 0 if all(r['status'] == 'ok' for r in results) else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
