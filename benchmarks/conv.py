r"""Local mixing: lax's grouped convolution against conv.depthwise_conv (shifted sums).

  python benchmarks/conv.py           # the default configs' layer shapes
  python benchmarks/conv.py --quick   # smoke run: tiny shapes

Times the forward, and separately the backward (gradients of input and kernel
for a given output gradient), of one depthwise convolution at the shape of each default config's conv layer (batch
8 for the classifiers, emb 64 or 128; centred padding throughout), in this process: median of --reps timed
calls after one warm-up. Each is jitted alone: inside a model XLA may fuse
them with their neighbours, faster or slower (benchmarks/train_throughput.py and
the config docstrings time whole steps). Outputs (--out, default benchmarks/results/conv/,
--quick benchmarks/quick/conv/): conv.json and conv.md.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

# name: (x shape [batch, *spatial, emb], window): audio.py, image.py, mlm.py, lm.py.
SHAPES = {
    'audio (width 31)': ((8, 4000, 64), (31,)),
    'image (5x5 grid)': ((8, 32, 32, 64), (5, 5)),
    'mlm (width 5)': ((8, 1024, 128), (5,)),
    'lm (width 4)': ((16, 256, 128), (4,)),
}
QUICK_SHAPES = {'1-D': ((2, 64, 8), (5,)), '2-D': ((2, 8, 8, 8), (3, 3))}


def measure(shape, window, reps):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top

  from linformer_jax import conv  # pylint: disable=g-import-not-at-top
  padding = tuple(((w - 1) // 2, w // 2) for w in window)
  spatial = 'HW'[-len(window):] if len(window) == 2 else 'W'

  def grouped(x, k):
    dims = (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C')
    return lax.conv_general_dilated(x, k[..., None, :], (1,) * len(window), padding,
                                    dimension_numbers=dims, feature_group_count=x.shape[-1])

  def shifted(x, k):
    return conv.depthwise_conv(x, k, padding)

  x = jax.random.normal(jax.random.key(0), shape)
  k = jax.random.normal(jax.random.key(1), window + (shape[-1],))
  cotangent = jax.random.normal(jax.random.key(2), shape)  # as from the layers above
  row = {}
  for name, fn in (('lax', grouped), ('shifted', shifted)):
    fwd = jax.jit(fn)
    bwd = jax.jit(lambda x, k, fn=fn: jax.vjp(fn, x, k)[1](cotangent))
    for mode, f in (('fwd', fwd), ('bwd', bwd)):
      times, _ = harness.timed_runs(lambda f=f: jax.block_until_ready(f(x, k)), reps=reps,
                                    budget_s=30.0, max_warmup_s=60.0)
      row[f'{name}_{mode}_ms'] = 1000 * harness.median(times)
    row[f'{name}_fwd_bwd_ms'] = row[f'{name}_fwd_ms'] + row[f'{name}_bwd_ms']
  return row


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='smoke run: tiny shapes, seconds')
  p.add_argument('--reps', type=int, default=10, help='timed calls per configuration')
  p.add_argument('--out', help='results folder (default benchmarks/results/conv)')
  args = p.parse_args(argv)
  host, device = harness.host_info(), harness.device_info()
  results = []
  for name, (shape, window) in (QUICK_SHAPES if args.quick else SHAPES).items():
    row = {'layer': name, 'shape': list(shape), 'window': list(window),
           **measure(shape, window, 2 if args.quick else args.reps)}
    print(json.dumps(row), flush=True)
    results.append(row)
  report = {'benchmark': 'conv', 'command': 'python benchmarks/conv.py ' + ' '.join(argv),
            'host': host, 'device': device, 'results': results}
  rows = [[r['layer'], 'x'.join(map(str, r['shape'])), harness.fmt(r['lax_fwd_ms']),
           harness.fmt(r['shifted_fwd_ms']), harness.fmt(r['lax_bwd_ms']),
           harness.fmt(r['shifted_bwd_ms']), harness.fmt(r['lax_fwd_bwd_ms']),
           harness.fmt(r['shifted_fwd_bwd_ms']),
           harness.fmt(r['lax_fwd_bwd_ms'] / r['shifted_fwd_bwd_ms'])] for r in results]
  md = '\n\n'.join([
      '# Depthwise convolution: lax grouped conv vs shifted sums (ms, median)',
      f"`{report['command'].strip()}` on {harness.machine_line(host, device)}",
      harness.markdown_table(['layer', 'input', 'lax fwd', 'shifted fwd', 'lax bwd',
                              'shifted bwd', 'lax fwd+bwd', 'shifted fwd+bwd', 'speed-up'], rows)])
  out = args.out or harness.default_out('conv', args.quick)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'conv.json'), 'w') as f:
    json.dump(report, f, indent=1)
    f.write('\n')
  with open(os.path.join(out, 'conv.md'), 'w') as f:
    f.write(md + '\n')
  print(md)


if __name__ == '__main__':
  main(sys.argv[1:])
