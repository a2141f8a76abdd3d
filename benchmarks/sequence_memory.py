r"""The train step per device against devices and n: compiled memory and tokens/s, sequence split.

  python benchmarks/sequence_memory.py           # configs/lm_long.py's model, n = 16k..128k, 1-8 devices
  python benchmarks/sequence_memory.py --quick   # smoke run: a tiny model, n = 1k and 2k
  python benchmarks/sequence_memory.py --steps 0 # compile only: memory, no tokens/s

For configs/lm_long.py's model at each n, trainer.train_step (forward, backward,
AdamW update) is jitted (a) on one device, the unsharded model, and (b) under
`jax.set_mesh` of a mesh data 1 x fsdp 1 x sequence P on the first P of 8 host
devices faked with XLA_FLAGS=--xla_force_host_platform_device_count=8 (`main`
sets it before JAX is imported), tokens split P(('data', 'fsdp'), 'sequence'),
parameters and optimizer state replicated; the layers split themselves
(linformer_jax/sequence_sharding.py). Memory: XLA's `memory_analysis()` of the
compiled step, for the SPMD program one device's: arguments (parameters,
optimizer state, batch), temporaries and outputs in MiB; 'total' = arguments +
outputs + temporaries - aliased. On CPU XLA's analysis undercounts the real
footprint (see README), so read the ratio, not the absolute figures. Tokens/s:
the compiled step run on random tokens, one untimed step, then the median of
--steps. The fake devices share the host's cores, so on a CPU tokens/s against
P measures what splitting costs, not what it gains. Outputs (--out, default
benchmarks/results/sequence_memory/, --quick benchmarks/quick/sequence_memory/):
sequence_memory.json and sequence_memory.md.
"""
import argparse
import contextlib
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

DEVICES = 8
DEVICE_COUNTS = (1, 2, 4, 8)
QUICK_DEVICE_COUNTS = (1, 8)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = (16384, 65536, 131072)
QUICK_LENGTHS = (1024, 2048)
QUICK_MODEL = {'model.num_layers': 1, 'model.emb_dim': 32, 'model.mlp_dim': 64,
               'model.num_heads': 2}
MiB = harness.MiB


def _analysis(compiled):
  m = compiled.memory_analysis()
  sizes = {'arguments': m.argument_size_in_bytes, 'outputs': m.output_size_in_bytes,
           'temporaries': m.temp_size_in_bytes, 'aliased': m.alias_size_in_bytes}
  sizes['total'] = sizes['arguments'] + sizes['outputs'] + sizes['temporaries'] - sizes['aliased']
  return {k: v / MiB for k, v in sizes.items()}


def measure(n, devices, steps, quick):
  """{'sequence_P': {memory in MiB, step_s, tokens_per_sec}} for each P in devices, at length n.

  P = 1 is the unsharded model jitted on one device; P > 1 splits every row over
  the first P devices (mesh data 1 x fsdp 1 x sequence P). steps > 0 also runs the
  step on random tokens: one untimed, then the median of `steps` timed ones.
  """
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from linformer_jax import config_lib, models, tasks, trainer  # pylint: disable=g-import-not-at-top
  from linformer_jax.data import vocab  # pylint: disable=g-import-not-at-top
  config = config_lib.load(os.path.join(REPO, 'configs', 'lm_long.py'),
                           {'seq_len': n, **(QUICK_MODEL if quick else {})})
  model = models.LanguageModel(tasks.build_model_config(
      config, seq_len=n, vocab_size=vocab.VOCAB_SIZE, pad_id=vocab.PAD_ID))
  schedule = trainer.learning_rate_schedule(config)
  tx = trainer.create_optimizer(config, schedule)
  b = config.batch_size

  def init(rng):
    params = model.init(rng, jnp.zeros((1, n), jnp.int32))['params']
    return trainer.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params))
  step = functools.partial(trainer.train_step, model=model, tx=tx, schedule=schedule,
                           targets=lambda batch: (batch['targets'], batch['weights']))
  tokens = np.random.default_rng(0).integers(0, vocab.VOCAB_SIZE, (b, n + 1), dtype=np.int32)
  host_batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
                'weights': np.ones((b, n), np.float32)}
  row = {'batch': b, 'layers': config.model.num_layers, 'emb_dim': config.model.emb_dim}
  for p in devices:
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:p]).reshape(1, 1, p),
                             ('data', 'fsdp', 'sequence'))
    whole, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(('data', 'fsdp'), 'sequence'))
    with jax.set_mesh(mesh) if p > 1 else contextlib.nullcontext():
      jitted = (jax.jit(step, in_shardings=(whole, split, whole), out_shardings=(whole, whole))
                if p > 1 else jax.jit(step))
      state = jax.jit(init, out_shardings=whole)(jax.random.key(0))
      batch = jax.device_put(host_batch, split)
      rng = jax.random.key(1)
      compiled = jitted.lower(state, batch, rng).compile()
      cell = _analysis(compiled)
      if steps:
        times = []
        for _ in range(steps + 1):
          tic = time.perf_counter()
          state, metrics = compiled(state, batch, rng)
          jax.block_until_ready((state, metrics))
          times.append(time.perf_counter() - tic)
        cell['step_s'] = harness.median(times[1:])
        cell['tokens_per_sec'] = b * n / cell['step_s']
    row[f'sequence_{p}'] = cell
    del state, batch, compiled, jitted
    jax.clear_caches()
  return row


def markdown(report):
  results, devices = report['results'], report['devices']
  rows = []
  for r in results:
    one = r['sequence_1'] if 1 in devices else None
    for p in devices:
      c = r[f'sequence_{p}']
      rows.append([r['n'], p] + [harness.fmt(c[k]) for k in ('arguments', 'temporaries', 'total')]
                  + [harness.fmt(one['total'] / c['total']) if one else '-',
                     harness.fmt(c.get('step_s')), harness.fmt(c.get('tokens_per_sec'), 4),
                     harness.fmt(c['tokens_per_sec'] / one['tokens_per_sec'])
                     if one and 'tokens_per_sec' in c else '-'])
  headers = ['n', 'devices (sequence axis)', 'arguments MiB', 'temporaries MiB', 'total MiB',
             'total: 1 device ÷ this', 'step s', 'tokens/s', 'tokens/s ÷ 1 device\'s']
  first = results[0]
  return '\n\n'.join([
      '# Train step per device against devices and n: memory (XLA memory_analysis) and tokens/s',
      f"`{report['command'].strip()}` on {harness.machine_line(report['host'], report['device'])} "
      f'({DEVICES} host devices faked with XLA_FLAGS: they share the cores, so tokens/s compares '
      f'the programs, it does not show scaling); configs/lm_long.py\'s model: batch '
      f"{first['batch']}, {first['layers']} layers, width {first['emb_dim']}"
      f"{' (--quick: a tiny model)' if report['run'] == 'quick' else ''}, causal linear attention, "
      f"conv width 4. Step time: median of {report['steps']} steps after one untimed"
      f"{'' if report['steps'] else ' (not run: compile only)'}.",
      harness.markdown_table(headers, rows)])


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='smoke run: tiny model, short sequences')
  p.add_argument('--devices', help=f'comma-separated devices on the sequence axis, each dividing '
                 f'{DEVICES} (default {DEVICE_COUNTS}; --quick {QUICK_DEVICE_COUNTS})')
  p.add_argument('--lengths', help=f'comma-separated n (default {LENGTHS}; --quick {QUICK_LENGTHS})')
  p.add_argument('--steps', type=int, default=2, help='timed steps per cell (0: compile only)')
  p.add_argument('--out', help='results folder (default benchmarks/results/sequence_memory)')
  args = p.parse_args(argv)
  devices = (tuple(int(d) for d in args.devices.split(',')) if args.devices
             else QUICK_DEVICE_COUNTS if args.quick else DEVICE_COUNTS)
  bad = [d for d in devices if d < 1 or DEVICES % d]
  if bad:
    p.error(f'--devices {bad}: each must divide the {DEVICES} host devices (1, 2, 4 or 8)')
  lengths = (tuple(int(n) for n in args.lengths.split(',')) if args.lengths
             else QUICK_LENGTHS if args.quick else LENGTHS)
  bad = [n for n in lengths if n < 1 or n % max(devices)]
  if bad:
    p.error(f'--lengths {bad}: each must be a positive multiple of {max(devices)} devices')
  if args.steps < 0:
    p.error(f'--steps must be 0 or more, got {args.steps}')
  # Before JAX is imported (measure and device_info import it).
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={DEVICES}').strip()
  host, device = harness.host_info(), harness.device_info()
  results = []
  for n in lengths:
    row = {'n': n, **measure(n, devices, args.steps, args.quick)}
    print(json.dumps(row), flush=True)
    results.append(row)
  report = {'benchmark': 'sequence_memory', 'run': 'quick' if args.quick else 'full',
            'command': 'python benchmarks/sequence_memory.py ' + ' '.join(argv),
            'host': host, 'device': device, 'devices': devices, 'steps': args.steps,
            'results': results}
  md = markdown(report)
  out = args.out or harness.default_out('sequence_memory', args.quick)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'sequence_memory.json'), 'w') as f:
    json.dump(report, f, indent=1)
    f.write('\n')
  with open(os.path.join(out, 'sequence_memory.md'), 'w') as f:
    f.write(md + '\n')
  print(md)


if __name__ == '__main__':
  main(sys.argv[1:])
