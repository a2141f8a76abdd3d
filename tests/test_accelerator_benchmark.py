"""benchmarks/accelerator.py: its FLOP and roofline arithmetic, its plan, and a --quick run.

The --quick run is a subprocess (slow): other tests import tensorflow and
ml_collections into this process, and the script must not import them.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, 'benchmarks')
sys.path.insert(0, BENCH)

import accelerator  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_kernel_flop_formulas():
  b, n, h, d = 4, 16384, 16, 64
  f = accelerator.forward_flops
  assert f('softmax', False, b, n, h, d) == 4 * 4 * 16 * 16384 ** 2 * 64 == 4398046511104
  assert f('softmax', True, b, n, h, d) == 2199023255552
  assert f(accelerator.DPA, True, b, n, h, d) == 2199023255552
  assert f('linformer', False, b, n, h, d) == 8 * 4 * 16 * 16384 * 128 * 64 == 68719476736
  assert f('linear', False, b, n, h, d) == 4 * 4 * 16 * 16384 * 64 * 64 == 17179869184
  assert f('linear', True, b, n, h, d) == 4 * 4 * 16 * 16384 * (64 * 64 + 64 * 64) == 34359738368
  assert f('elu_linear', False, b, n, h, d) == 4 * 4 * 16 * 16384 * 64 * 65 == 17448304640
  want = 2 * 4 * 16 * 16384 * (64 * 64 + 64 * 65 + 2 * 64 * 65)
  assert f('elu_linear', True, b, n, h, d) == want == 34762391552
  assert accelerator.kernel_flops('linear', False, 'fwd_bwd', b, n, h, d) == 3 * 17179869184
  # Every (kind, causal) of the kernel table has a written formula.
  assert {(k, c) for k, c, _, _ in accelerator.kernel_paths('gpu') if k != accelerator.DPA} == set(
      accelerator.FLOP_FORMULAS)


def test_roofline_arithmetic():
  # 1 GFLOP at 1 TFLOP/s is 1 ms; 2 MB at 1 GB/s is 2 ms: the bytes bound wins.
  bound, frac = accelerator.roofline(1e9, 2e6, 4e-3, 1e12, 1e9)
  assert bound == pytest.approx(2e-3) and frac == pytest.approx(0.5)
  bound, frac = accelerator.roofline(1e9, 1e5, 1e-3, 1e12, 1e9)
  assert bound == pytest.approx(1e-3) and frac == pytest.approx(1.0)
  assert accelerator.kernel_bytes('fwd', 4, 16384, 16, 64, 2) == 4 * 4 * 16384 * 16 * 64 * 2 == 536870912
  assert accelerator.kernel_bytes('fwd_bwd', 1, 10, 1, 1, 4) == 240
  # The model: 6·N·T plus 3 · layers · forward attention FLOPs.
  flops, attn = accelerator.train_flops(92_000_000, 65536, 12, 'linear', False, 8, 8192, 12, 64)
  assert attn == 3 * 12 * 4 * 8 * 12 * 8192 * 64 * 64 == 463856467968
  assert flops == 6 * 92_000_000 * 65536 + attn
  assert accelerator.mfu(1e12, 2.0, 1e12) == 0.5


def test_plan_covers_the_table_and_skips_with_reasons():
  sizes = accelerator.Sizes.full()
  gpu = accelerator.kernel_plan(sizes, 'gpu')
  cpu = accelerator.kernel_plan(sizes, 'cpu')
  assert all(r['batch'] * r['n'] == 65536 for r in gpu if r['grid'] == 'main')
  assert {r['n'] for r in gpu if r['grid'] == 'long'} == {262144, 1048576}
  assert {r['kind'] for r in gpu if r['grid'] == 'long'} == {'linear', 'elu_linear'}
  pallas = [r for r in cpu if r['implementation'] == 'pallas']
  assert pallas and all(r['status'] == 'skipped' for r in pallas)
  assert all(r['status'] is None for r in gpu if r['implementation'] == 'pallas')
  cudnn = [r for r in gpu if r['implementation'] == 'cudnn']
  assert {r['dtype'] for r in cudnn} == {'bfloat16'} and {r['causal'] for r in cudnn} == {False, True}
  explicit = [r for r in gpu if r['kind'] == 'softmax' and r['implementation'] == 'xla']
  assert {r['n'] for r in explicit if r['status'] == 'skipped'} == {65536}
  blocked = [r for r in gpu if r['kind'] == 'softmax' and r['implementation'] == 'blocked']
  assert {r['n'] for r in blocked} == {r['n'] for r in explicit}
  assert all(r['status'] is None for r in blocked)  # O(block·n) scores: no n×n to skip for
  assert all('reason' in r for r in gpu + cpu if r['status'] == 'skipped')


@pytest.mark.slow
def test_quick_run(tmp_path):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # a test run's fake multi-device CPU would change what it measures
  proc = subprocess.run([sys.executable, os.path.join(BENCH, 'accelerator.py'), '--quick',
                         '--check_imports', '--out', str(tmp_path)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  (path,) = tmp_path.glob('*.json')
  report = json.loads(path.read_text())
  assert report['forbidden_imports'] == []
  for section in ('ceilings', 'kernels', 'train', 'compile', 'decode'):
    assert report[section], section
  assert (tmp_path / (path.stem + '.md')).read_text().count('\n## ') == 5
  planned = accelerator.kernel_plan(accelerator.Sizes.quick(), report['meta']['platform'])
  key = lambda r: (r['kind'], r['causal'], r['implementation'], r['dtype'], r['mode'], r['n'])
  assert [key(r) for r in report['kernels']] == [key(r) for r in planned]
  for row in report['kernels'] + report['train'] + report['compile'] + report['decode']:
    assert row['status'] == 'ok' or row['reason'], row
  ok = [r for r in report['kernels'] if r['status'] == 'ok']
  assert len(ok) >= 30
  assert all(0 < r['roofline_fraction'] <= 1 for r in ok)
  assert all(r['status'] == 'ok' and 0 < r['mfu'] <= 1 and r['finite'] for r in report['train'])
  assert all(r['status'] == 'ok' and r['finite'] for r in report['decode'])
  assert all(r['status'] == 'ok' for r in report['compile'] if 'pallas' not in r['name'])
