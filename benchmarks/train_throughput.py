r"""MLM training throughput (tokens/s) and peak memory for each attention, against seq_len.

  python benchmarks/train_throughput.py           # full: seq_len 512, 2048, 8192
  python benchmarks/train_throughput.py --quick   # smoke run: one tiny model, seq_len 128

One model size for every attention (4 layers, emb 256, 4 heads, MLP 1024) and
the same tokens per step at every seq_len (batch = tokens_per_step / seq_len).
Each (attention, seq_len) runs in a fresh process: the train library's jitted
AdamW `train_step` (dropout on) on random tokens with 15% of positions as
targets; compile, one warm-up step, then the median of timed steps. Memory is
the process's peak RSS (device peak bytes on accelerators). Sizes that would
not fit, or would take longer than --max_step_s per step, are skipped.
Workers that crash, time out or get killed are recorded as failed. Outputs
(--out, default benchmarks/results/train_throughput/, --quick
benchmarks/quick/train_throughput/): train_throughput.json, .md and .png.
"""
import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

ATTENTIONS = ('softmax', 'linformer', 'linear', 'elu_linear')
MEMORY_FRACTION = 0.7
MASK_RATE = 0.15


def estimate_bytes(attention, seq_len, batch, model):
  """Rough training footprint: activations kept for the backward pass.

  Per layer about 16 [batch, n, emb] and 2 [batch, n, mlp] float32 arrays,
  plus what the attention keeps: softmax three [batch, heads, n, n] arrays
  (scores, weights, their gradient), Linformer three [batch, heads, n, k].
  """
  b, n, layers = batch, seq_len, model['num_layers']
  per_layer = 4 * b * n * (16 * model['emb_dim'] + 2 * model['mlp_dim'])
  if attention == 'softmax':
    per_layer += 3 * 4 * b * model['num_heads'] * n * n
  elif attention == 'linformer':
    per_layer += 3 * 4 * b * model['num_heads'] * n * model['linformer_k']
  return layers * per_layer + 4 * b * n * 260 * 3  # + logits, softmax and gradient


# ----------------------------------------------------------------------------- worker


def worker(spec):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from linformer_jax import models  # pylint: disable=g-import-not-at-top
  from linformer_jax import tasks  # pylint: disable=g-import-not-at-top
  from linformer_jax import trainer  # pylint: disable=g-import-not-at-top
  # The byte vocabulary alone: data.text would import TensorFlow into every worker.
  from linformer_jax.data.vocab import MASK_ID, PAD_ID, VOCAB_SIZE  # pylint: disable=g-import-not-at-top
  from linformer_jax.model_config import ModelConfig  # pylint: disable=g-import-not-at-top

  device = harness.device_info()
  rss_base = harness.peak_rss()
  n, batch = spec['seq_len'], spec['batch']
  model_cfg = ModelConfig(vocab_size=VOCAB_SIZE, pad_id=PAD_ID, max_len=n, attention=spec['attention'], **spec['model'])
  opt = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=10, num_train_steps=1000,
                                       weight_decay=0.01, grad_clip_norm=1.0))
  schedule = trainer.learning_rate_schedule(opt)
  tx = trainer.create_optimizer(opt, schedule)
  model = models.MLMModel(model_cfg)
  task = tasks.Task(create_datasets=None, baselines=None, model=model,
                    input_spec=jax.ShapeDtypeStruct((1, n), jnp.int32),
                    targets=lambda b: (b['targets'], b['weights']))
  state = jax.jit(functools.partial(trainer.create_state, jax.random.PRNGKey(0), task, tx))()
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 256, (batch, n), dtype=np.int32)
  weights = (rng.random((batch, n)) < MASK_RATE).astype(np.float32)
  batch_arrays = {'inputs': jnp.asarray(np.where(weights > 0, MASK_ID, tokens)),
                  'targets': jnp.asarray(tokens), 'weights': jnp.asarray(weights)}
  step = jax.jit(functools.partial(trainer.train_step, model=model, tx=tx, schedule=schedule,
                                   targets=task.targets), donate_argnums=0)
  key = jax.random.PRNGKey(1)
  tic = time.perf_counter()
  compiled = step.lower(state, batch_arrays, key).compile()
  compile_s = time.perf_counter() - tic
  xla_bytes = harness.xla_memory(compiled)
  limit = harness.memory_limit()
  params = sum(x.size for x in jax.tree.leaves(state.params))
  result = {'device': device, 'compile_s': compile_s, 'xla_memory_bytes': xla_bytes,
            'num_params': int(params)}
  if xla_bytes and xla_bytes > MEMORY_FRACTION * limit:
    return harness.emit(dict(result, status='skipped', reason=(
        f'XLA plans {xla_bytes / harness.GiB:.1f} GiB > {MEMORY_FRACTION:.0%} of '
        f'{limit / harness.GiB:.1f} GiB available')))
  holder = {'state': state}

  def one_step():
    holder['state'], metrics = compiled(holder['state'], batch_arrays, key)
    holder['loss'] = float(jax.block_until_ready(metrics)['loss'])

  times, warmup = harness.timed_runs(one_step, reps=spec['reps'], budget_s=spec['budget_s'],
                                     max_warmup_s=spec['max_warmup_s'])
  device_peak, _ = harness.device_memory()
  rss = harness.peak_rss()
  t = harness.median(times)
  harness.emit(dict(result, status='ok', step_s=t, runs=len(times), times_s=times, warmup_s=warmup,
                    tokens_per_s=batch * n / t, last_loss=holder['loss'],
                    peak_rss_bytes=rss, rss_after_init_bytes=rss_base, device_peak_bytes=device_peak,
                    peak_memory_bytes=device_peak or rss))


# ----------------------------------------------------------------------------- sweep


def sweep(args, script, model):
  configs = [dict(attention=a, seq_len=n, batch=args.tokens_per_step // n)
             for a in ATTENTIONS for n in args.seq_lens]
  results, start, device = [], time.time(), {}
  last = {}  # attention -> (last ok result or None, why a smaller seq_len was skipped or None)
  for i, config in enumerate(configs):
    prev, root = last.get(config['attention'], (None, None))
    est = estimate_bytes(config['attention'], config['seq_len'], config['batch'], model)
    avail = harness.available_memory()
    remaining = args.time_budget_s - (time.time() - start)
    # With tokens per step fixed, softmax's attention cost per step grows like n.
    growth = config['seq_len'] / prev['seq_len'] if prev and config['attention'] == 'softmax' else 1
    predicted = prev['step_s'] * growth if prev else 0.0
    timeout = args.worker_overhead_s + predicted * (2 + args.reps)
    if config['batch'] < 1:
      result = dict(config, status='skipped', reason='seq_len > --tokens_per_step')
    elif root:
      result = dict(config, status='skipped', reason=f'a shorter seq_len was skipped ({root})')
    elif est > MEMORY_FRACTION * avail:
      result = dict(config, status='skipped', reason=(
          f'estimated {est / harness.GiB:.1f} GiB > {MEMORY_FRACTION:.0%} of '
          f'{avail / harness.GiB:.1f} GiB available'))
    elif predicted > args.max_step_s:
      result = dict(config, status='skipped',
                    reason=f'predicted {predicted:.0f} s per step > --max_step_s={args.max_step_s:.0f}')
    elif timeout > remaining:
      result = dict(config, status='skipped',
                    reason=f'time budget: {max(remaining, 0):.0f} s left, needs ~{timeout:.0f} s')
    else:
      spec = dict(config, model=model, reps=args.reps, budget_s=args.rep_budget_s,
                  max_warmup_s=args.max_warmup_s)
      result = dict(config, **harness.run_worker(script, spec, timeout, env=args.worker_env))
      device = result.pop('device', None) or device
    result['estimated_bytes'] = est
    if result['status'] == 'ok':
      prev = result
    elif root is None:
      root = f"seq_len={config['seq_len']}: {result['reason']}"
    last[config['attention']] = (prev, root)
    results.append(result)
    status = (f"{result['tokens_per_s']:.0f} tokens/s, peak {result['peak_memory_bytes'] / harness.MiB:.0f} MiB"
              if result['status'] == 'ok' else f"{result['status']}: {result['reason']}")
    print(f"[{i + 1}/{len(configs)} {time.time() - start:.0f}s] {config['attention']} "
          f"seq_len={config['seq_len']} batch={config['batch']}: {status}", flush=True)
  for r in results:
    base = next((s for s in results if s['attention'] == 'softmax' and s['seq_len'] == r['seq_len']
                 and s['status'] == 'ok'), None)
    if r['status'] == 'ok' and base:
      r['speedup_vs_softmax'] = r['tokens_per_s'] / base['tokens_per_s']
      r['memory_vs_softmax'] = r['peak_memory_bytes'] / base['peak_memory_bytes']
  return results, device


# ----------------------------------------------------------------------------- outputs


def markdown(report):
  m = report['model']
  rows = []
  for r in report['configs']:
    ok = r['status'] == 'ok'
    rows.append([r['attention'], r['seq_len'], r['batch'], r['status'],
                 harness.fmt(r['tokens_per_s'], 4) if ok else '-',
                 harness.fmt(r['step_s'] * 1e3, 4) if ok else '-', r.get('runs', '-'),
                 harness.fmt(r.get('speedup_vs_softmax')),
                 harness.fmt(r['peak_memory_bytes'] / harness.MiB, 4) if ok else '-',
                 harness.fmt(r['xla_memory_bytes'] / harness.MiB, 4) if r.get('xla_memory_bytes') else '-',
                 '' if ok else r['reason']])
  return '\n'.join([
      f"# MLM training throughput ({report['run']})", '',
      f"Machine: {harness.machine_line(report['host'], report['device'])}; load at end "
      f"{report['load_average_end']}.", '',
      f"Model: {m['num_layers']} layers, emb {m['emb_dim']}, {m['num_heads']} heads, MLP "
      f"{m['mlp_dim']}, Linformer k={m['linformer_k']} (headwise), float32, dropout "
      f"{m['dropout_rate']}; {report['tokens_per_step']} tokens per step; jitted AdamW train_step "
      f"from linformer_jax.trainer. Median of up to {report['settings']['reps']} steps after a "
      'warm-up step, one fresh process per row; peak memory is the process\'s max RSS.', '',
      '## All configurations', '', harness.markdown_table(
          ['attention', 'seq_len', 'batch', 'status', 'tokens/s', 'step ms', 'steps',
           'x softmax', 'peak MiB', 'XLA est. MiB', 'note'], rows)])


def figure(report):
  plt = harness.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout='constrained')
  for attention in ATTENTIONS:
    ok = sorted((r['seq_len'], r['tokens_per_s'], r['peak_memory_bytes'] / harness.MiB)
                for r in report['configs'] if r['attention'] == attention and r['status'] == 'ok')
    if ok:
      n, tps, mem = zip(*ok)
      axes[0].plot(n, tps, marker='o', label=attention)
      axes[1].plot(n, mem, marker='o', label=attention)
  for ax, title in zip(axes, ('training tokens/s', 'peak memory (MiB)')):
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('seq_len')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
  axes[0].legend()
  fig.suptitle(f"MLM training, {report['tokens_per_step']} tokens/step "
               f"({report['device'].get('device_kind', '?')}, {report['run']})")
  return fig


# ----------------------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='smoke run: tiny model, one seq_len')
  p.add_argument('--out', help='results folder (default benchmarks/results/train_throughput, --quick benchmarks/quick/...)')
  p.add_argument('--worker', help=argparse.SUPPRESS)
  p.add_argument('--seq_lens', default='512,2048,8192')
  p.add_argument('--tokens_per_step', type=int, default=8192)
  p.add_argument('--num_layers', type=int, default=4)
  p.add_argument('--emb_dim', type=int, default=256)
  p.add_argument('--num_heads', type=int, default=4)
  p.add_argument('--mlp_dim', type=int, default=1024)
  p.add_argument('--linformer_k', type=int, default=128)
  p.add_argument('--reps', type=int, default=5, help='timed steps per configuration (at most)')
  p.add_argument('--rep_budget_s', type=float, default=30.0, help='stop timing after this long')
  p.add_argument('--max_warmup_s', type=float, default=60.0,
                 help='a slower warm-up step is the only sample')
  p.add_argument('--max_step_s', type=float, default=120.0, help='skip sizes predicted slower')
  p.add_argument('--worker_overhead_s', type=float, default=300.0,
                 help='worker timeout on top of the predicted step times (start-up, compile)')
  p.add_argument('--time_budget_s', type=float, default=20 * 60)
  args = p.parse_args(argv)
  if args.quick:
    args.seq_lens, args.tokens_per_step = '128', 256
    args.num_layers, args.emb_dim, args.num_heads, args.mlp_dim, args.linformer_k = 1, 32, 2, 64, 16
    args.reps, args.rep_budget_s, args.worker_overhead_s = 2, 1.0, 300.0
  args.seq_lens = [int(x) for x in args.seq_lens.split(',')]
  args.worker_env = harness.quick_env() if args.quick else None
  return args


def main(argv):
  args = parse_args(argv)
  if args.worker:
    worker(json.loads(args.worker))
    return
  model = dict(num_layers=args.num_layers, emb_dim=args.emb_dim, num_heads=args.num_heads,
               mlp_dim=args.mlp_dim, linformer_k=args.linformer_k, dropout_rate=0.1)
  host = harness.host_info()
  tic = time.time()
  results, device = sweep(args, os.path.abspath(__file__), model)
  report = {
      'benchmark': 'train_throughput', 'run': 'quick' if args.quick else 'full',
      'command': 'python benchmarks/train_throughput.py ' + ' '.join(argv), 'host': host,
      'device': device, 'model': model, 'tokens_per_step': args.tokens_per_step,
      'settings': {'reps': args.reps, 'rep_budget_s': args.rep_budget_s, 'mask_rate': MASK_RATE},
      'planned': len(results), 'configs': results, 'elapsed_s': round(time.time() - tic, 1),
      'load_average_end': harness.load_average(),
  }
  paths = harness.write_outputs(args.out or harness.default_out('train_throughput', args.quick),
                                'train_throughput', report, markdown(report), figure(report))
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  main(sys.argv[1:])
