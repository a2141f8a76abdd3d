r"""Per-device memory of the compiled train step: the sequence split over 8 devices vs one device.

  python benchmarks/sequence_memory.py           # configs/lm_long.py's model, n = 16k..128k
  python benchmarks/sequence_memory.py --quick   # smoke run: a tiny model, n = 1k and 2k

Compile only, nothing runs: XLA's `memory_analysis()` of trainer.train_step
(forward, backward, AdamW update) for configs/lm_long.py's model at each n,
jitted (a) on one device and (b) under `jax.set_mesh` of a mesh data 1 x fsdp 1
x sequence 8 on 8 host devices faked with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (`main` sets it before JAX
is imported), tokens split P(('data', 'fsdp'), 'sequence'), parameters and
optimizer state replicated; the layers split themselves
(linformer_jax/sequence_sharding.py). For the SPMD program the analysis is of
one device's program. Arguments (parameters, optimizer state, batch),
temporaries and outputs in MiB; 'total' = arguments + outputs + temporaries -
aliased. On CPU XLA's analysis undercounts the real footprint (see README), so
read the ratio, not the absolute figures. Outputs (--out, default
benchmarks/results/sequence_memory/, --quick benchmarks/quick/sequence_memory/):
sequence_memory.json and sequence_memory.md.
"""
import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

DEVICES = 8
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


def measure(n, quick):
  """{'one_device': MiB by kind, 'sequence_8': MiB by kind} of the step at length n."""
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
  state = jax.eval_shape(init, jax.random.key(0))
  spec = lambda dtype: jax.ShapeDtypeStruct((b, n), dtype)
  batch = {'inputs': spec(jnp.int32), 'targets': spec(jnp.int32), 'weights': spec(jnp.float32)}
  rng = jax.eval_shape(lambda: jax.random.key(0))
  step = functools.partial(trainer.train_step, model=model, tx=tx, schedule=schedule,
                           targets=lambda batch: (batch['targets'], batch['weights']))
  row = {'batch': b, 'layers': config.model.num_layers, 'emb_dim': config.model.emb_dim,
         'one_device': _analysis(jax.jit(step).lower(state, batch, rng).compile())}
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, 1, DEVICES),
                           ('data', 'fsdp', 'sequence'))
  whole, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(('data', 'fsdp'), 'sequence'))
  with jax.set_mesh(mesh):
    sharded = jax.jit(step, in_shardings=(whole, split, whole))
    row[f'sequence_{DEVICES}'] = _analysis(sharded.lower(state, batch, rng).compile())
  return row


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='smoke run: tiny model, short sequences')
  p.add_argument('--out', help='results folder (default benchmarks/results/sequence_memory)')
  args = p.parse_args(argv)
  # Before JAX is imported (measure and device_info import it).
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={DEVICES}').strip()
  host, device = harness.host_info(), harness.device_info()
  results = []
  for n in QUICK_LENGTHS if args.quick else LENGTHS:
    row = {'n': n, **measure(n, args.quick)}
    print(json.dumps(row), flush=True)
    results.append(row)
  report = {'benchmark': 'sequence_memory', 'run': 'quick' if args.quick else 'full',
            'command': 'python benchmarks/sequence_memory.py ' + ' '.join(argv),
            'host': host, 'device': device, 'results': results}
  kinds = ('arguments', 'temporaries', 'outputs', 'total')
  sharded = f'sequence_{DEVICES}'
  rows = [[r['n']] + [harness.fmt(r[where][k]) for where in ('one_device', sharded)
                      for k in kinds]
          + [harness.fmt(r['one_device']['total'] / r[sharded]['total'])] for r in results]
  headers = (['n'] + [f'1 device {k}' for k in kinds] + [f'per device, sequence {DEVICES}: {k}'
                                                          for k in kinds] + ['total ratio'])
  md = '\n\n'.join([
      '# Train step memory per device (MiB, XLA memory_analysis, compile only)',
      f"`{report['command'].strip()}` on {harness.machine_line(host, device)} "
      f'({DEVICES} host devices faked with XLA_FLAGS); configs/lm_long.py\'s model: '
      f"batch {results[0]['batch']}, {results[0]['layers']} layers, width {results[0]['emb_dim']}"
      f'{" (--quick: a tiny model)" if args.quick else ""}, causal linear attention, conv width 4.',
      harness.markdown_table(headers, rows)])
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
