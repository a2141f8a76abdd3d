"""Smoke tests of benchmarks/: the --quick runs produce complete, well-formed outputs.

The scripts run once, concurrently, into temporary folders (one module
fixture, slow); every row of a quick run must be 'ok', so a crashed worker
('failed') fails its test. No timing is asserted. The pure helpers (FLOP formulas, growth,
targets, summaries, worker failure handling) are tested directly.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, 'benchmarks')
sys.path.insert(0, BENCH)

import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
import conv  # pylint: disable=g-import-not-at-top,wrong-import-position
import hybrid_configs  # pylint: disable=g-import-not-at-top,wrong-import-position
import kernels  # pylint: disable=g-import-not-at-top,wrong-import-position
import quality  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPTS = ('kernels', 'train_throughput', 'quality')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def quick_runs(tmp_path_factory):
  """{name: out dir} after `python benchmarks/<name>.py --quick --out <dir>` for each script."""
  env = dict(os.environ)
  # A test run's fake multi-device CPU would change what the scripts measure.
  env.pop('XLA_FLAGS', None)
  procs, outs = {}, {}
  for name in SCRIPTS:
    outs[name] = str(tmp_path_factory.mktemp(name))
    log = open(os.path.join(outs[name], 'log.txt'), 'w')
    procs[name] = (subprocess.Popen(
        [sys.executable, os.path.join(BENCH, f'{name}.py'), '--quick', '--out', outs[name]],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)
  deadline = time.time() + 1500
  for name, (proc, log) in procs.items():
    try:
      proc.wait(timeout=max(deadline - time.time(), 1))
    finally:
      if proc.poll() is None:
        proc.kill()
      log.close()
    with open(os.path.join(outs[name], 'log.txt')) as f:
      tail = f.read()[-3000:]
    assert proc.returncode == 0, f'{name} --quick failed:\n{tail}'
  return outs


def _load(out, name):
  paths = {ext: os.path.join(out, f'{name}.{ext}') for ext in ('json', 'md', 'png')}
  for path in paths.values():
    assert os.path.getsize(path) > 0, path
  with open(paths['png'], 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  with open(paths['json']) as f:
    report = json.load(f)
  with open(paths['md']) as f:
    md = f.read()
  return report, md


def _table_rows(md, heading):
  """Data rows of the first markdown table after `heading`."""
  section = md.split(heading, 1)[1]
  lines = [l for l in section.splitlines() if l.startswith('|')]
  end = next((i for i in range(1, len(lines)) if not lines[i].startswith('|')), len(lines))
  rows = []
  for line in lines[2:end]:
    rows.append([c.strip() for c in line.strip('|').split('|')])
  return rows


def _check_common(report, name):
  assert report['benchmark'] == name and report['run'] == 'quick'
  for key in ('cpu_model', 'cpu_cores', 'ram_gib', 'date', 'load_average_1_5_15'):
    assert key in report['host']
  assert report['device']['device_kind']
  assert report['planned'] == len(report['configs' if name != 'quality' else 'runs'])


def _check_status(row, ok_fields):
  # A quick run's sizes fit any machine: a row that is not 'ok' is a bug.
  assert row['status'] == 'ok', row
  for field in ok_fields:
    assert row[field] is not None and row[field] > 0, (field, row)


@pytest.mark.slow
def test_kernels_quick(quick_runs):
  report, md = _load(quick_runs['kernels'], 'kernels')
  _check_common(report, 'kernels')
  assert report['matmul']['gflops'] > 0
  planned = kernels.plan(kernels.parse_args(['--quick']), report['device']['platform'])
  got = [(r['kernel'], r['mode'], r['n']) for r in report['configs']]
  assert got == [(c['kernel'], c['mode'], c['n']) for c in planned]
  for r in report['configs']:
    _check_status(r, ('median_s', 'peak_memory_bytes', 'flops', 'gflops'))
  assert {k for k, _, _ in got} >= {'softmax', 'dpa_xla', 'linformer_k128', 'linformer_k256',
                                    'linear', 'linear_causal', 'elu_linear', 'elu_linear_causal'}
  assert {t['target'][:20] for t in report['targets']}  # every target is reported
  rows = _table_rows(md, '## All configurations')
  assert [(r[0], r[1], int(r[2])) for r in rows] == got


@pytest.mark.slow
def test_train_throughput_quick(quick_runs):
  report, md = _load(quick_runs['train_throughput'], 'train_throughput')
  _check_common(report, 'train_throughput')
  args = train_throughput.parse_args(['--quick'])
  got = [(r['attention'], r['seq_len']) for r in report['configs']]
  assert got == [(a, n) for a in train_throughput.ATTENTIONS for n in args.seq_lens]
  for r in report['configs']:
    _check_status(r, ('tokens_per_s', 'step_s', 'peak_memory_bytes'))
    assert r['batch'] * r['seq_len'] == report['tokens_per_step']
  rows = _table_rows(md, '## All configurations')
  assert [(r[0], int(r[1])) for r in rows] == got


@pytest.mark.slow
def test_quality_quick(quick_runs):
  report, md = _load(quick_runs['quality'], 'quality')
  _check_common(report, 'quality')
  for name in ('quality_grid', 'quality_curves'):
    with open(os.path.join(quick_runs['quality'], name + '.png'), 'rb') as f:
      assert f.read(8) == PNG_MAGIC
  args = quality.parse_args(['--quick'])
  got = [(r['group'], r['task'], r['kind'], r['seed']) for r in report['runs']]
  assert got == [p[:4] for p in quality.plan_runs(args)]
  # Every task with every kind it has (the control included), then the grid.
  assert {(t, k) for g, t, k, _ in got if g == 'main'} == {
      (t, k) for t in quality.TASKS for k in quality.kinds_for(t, quick=True)}
  assert set(quality.kinds_for('recall', quick=True)) == set(quality.KINDS) - {'softmax_rotary'}
  assert 'softmax_rotary' in quality.kinds_for('mlm_retrieval')
  assert 'linformer' not in quality.kinds_for('recall_causal')
  g = quality.GRID['quick']
  assert len([1 for r in got if r[0] == 'grid']) == (
      len(g['widths']) * len(g['pairs']) * len(quality.GRID_KINDS))
  for r in report['runs']:
    assert r['status'] == 'ok', r  # A crashed run fails the smoke test.
    assert 0.0 <= r['eval_accuracy'] <= 1.0 and r['eval_loss'] > 0 and r['steps'] == 2
    assert r['baselines'], r  # Every run wrote its step-0 baselines.
  assert len(report['summary']) == len({(t, k) for g, t, k, _ in got if g == 'main'})
  rows = _table_rows(md, '## All runs')
  assert [(r[0], r[1], r[2], int(r[3])) for r in rows] == got
  # _table_rows runs on into the next tables; the first rows are the main score's.
  assert [r[0] for r in _table_rows(md, '## Main score')][:len(quality.TASKS) + 1] == [
      *quality.TASKS, 'task']


@pytest.mark.slow
def test_conv_quick(tmp_path):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  subprocess.run([sys.executable, os.path.join(BENCH, 'conv.py'), '--quick', '--out',
                  str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True)
  with open(tmp_path / 'conv.json') as f:
    report = json.load(f)
  assert [r['layer'] for r in report['results']] == list(conv.QUICK_SHAPES)
  for row in report['results']:
    for name in ('lax', 'shifted'):
      assert row[f'{name}_fwd_ms'] > 0 and row[f'{name}_bwd_ms'] > 0
      assert row[f'{name}_fwd_bwd_ms'] == row[f'{name}_fwd_ms'] + row[f'{name}_bwd_ms']
  assert (tmp_path / 'conv.md').read_text().count('\n| ') == len(conv.QUICK_SHAPES) + 1


# ----------------------------------------------------------------------------- helpers


def test_flop_formulas():
  b, n, h, d, c = 2, 1024, 8, 64, 64
  assert kernels.forward_flops('softmax', b, n, h, d, c) == 4 * b * h * n * n * d
  assert kernels.forward_flops('linear', b, n, h, d, c) == 4 * b * h * n * d * d
  assert kernels.forward_flops('linformer_k128', b, n, h, d, c) == 8 * b * h * n * 128 * d
  assert kernels.forward_flops('linear_causal', b, n, h, d, c) == 4 * b * h * n * (d * d + c * d)
  assert kernels.flops('linear', 'fwd_bwd', b, n, h, d, c) == 3 * 4 * b * h * n * d * d


def _result(kernel, mode, n, t, mem=1 << 30, status='ok'):
  r = dict(kernel=kernel, mode=mode, n=n, status=status, flops=kernels.flops(kernel, mode, 1, n, 8, 64, 64))
  if status == 'ok':
    r.update(median_s=t, peak_memory_bytes=mem, rss_above_init_bytes=mem // 2)
  else:
    r['reason'] = 'test'
  return r


def test_growth_and_targets():
  ns = [4096, 8192, 16384, 32768, 65536]
  res = [_result('linear', 'fwd', n, 1e-3 * n / 4096 * 2.0 ** (i * 0.1)) for i, n in enumerate(ns)]
  res += [_result('linear_causal', 'fwd', n, 1.5e-3 * n / 4096) for n in ns]
  res += [_result('softmax', 'fwd', 16384, 0.5, mem=200 << 30)]
  kernels.add_rates(res, matmul_gflops=100.0)
  growth = kernels.growth_summary(res)
  assert growth['linear/fwd']['geomean'] == pytest.approx(2.0 * 2.0 ** 0.1)
  assert growth['linear/fwd']['max'] == pytest.approx(2.0 * 2.0 ** 0.1)
  assert growth['softmax/fwd']['geomean'] is None
  by_name = {t['target']: t for t in kernels.targets(res, 100.0, growth)}
  speed = by_name['linear fwd >= 100x faster than softmax at n=16384']
  assert speed['value'] == pytest.approx(0.5 / (4e-3 * 2.0 ** 0.2)) and speed['met']
  assert by_name['linear fwd >= 50x less peak memory than softmax at n=16384']['met']
  causal = next(t for k, t in by_name.items() if k.startswith('linear_causal fwd'))
  assert causal['value'] == pytest.approx(1.5 / 2.0 ** 0.4) and causal['met']
  assert next(t for k, t in by_name.items() if k.startswith('elu_linear fwd:'))['met'] is None


def test_quality_summary_skips_failed_runs():
  runs = [dict(group='main', task='recall', kind=k, seed=s, status='ok', eval_loss=1.0,
               eval_accuracy=acc, baselines={'baseline_mode_guess_accuracy': 0.3})
          for k, accs in (('softmax', (0.9, 1.0)), ('none', (0.3, 0.3))) for s, acc in enumerate(accs)]
  runs.append(dict(group='main', task='recall', kind='linear', seed=0, status='failed', reason='test'))
  for seed, acc in ((0, 0.5), (1, 0.7)):
    runs.append(dict(group='grid', task='recall', kind='softmax', seed=seed, status='ok',
                     eval_loss=1.0, eval_accuracy=acc, baselines={},
                     extra={'model.emb_dim': 32, 'num_pairs': 4}))
  runs.append(dict(group='grid', task='recall', kind='linear', seed=0, status='failed',
                   reason='test', extra={'model.emb_dim': 32, 'num_pairs': 4}))
  summary = quality.summarize(runs)
  assert [(s['task'], s['kind']) for s in summary] == [
      ('recall', 'softmax'), ('recall', 'none'), ('recall', 'linear')]
  soft = summary[0]
  assert soft['eval_accuracy']['mean'] == pytest.approx(0.95)
  assert soft['eval_accuracy']['std'] == pytest.approx(0.0707107, rel=1e-5)
  assert soft['baselines'] == {'baseline_mode_guess_accuracy': 0.3}
  assert summary[1]['eval_accuracy']['std'] == 0.0
  assert summary[2]['eval_accuracy']['mean'] is None and summary[2]['seeds'] == []
  grid = quality.grid_table(runs)
  assert list(grid) == [('softmax', 32, 4)]  # the failed linear cell is left out
  assert grid[('softmax', 32, 4)]['mean'] == pytest.approx(0.6)
  assert grid[('softmax', 32, 4)]['std'] == pytest.approx(0.1414214, rel=1e-5)


def test_quality_resume_reuses_finished_runs(tmp_path, monkeypatch):
  calls = []

  def fake_run_one(task, kind, seed, workdir, quick, extra=None):
    calls.append((task, kind, seed))
    os.makedirs(workdir, exist_ok=True)
    return {'status': 'ok', 'eval_loss': 1.0 + len(calls), 'eval_accuracy': 0.5, 'steps': 2,
            'wall_s': 1.0, 'baselines': {}, 'curve': [], 'command': 'x'}

  monkeypatch.setattr(quality, 'run_one', fake_run_one)
  args = quality.parse_args(['--quick', '--tasks', 'recall', '--no_grid', '--resume'])
  first = quality.sweep(args, str(tmp_path))
  assert len(calls) == len(first) == len(quality.kinds_for('recall', quick=True))
  assert quality.sweep(args, str(tmp_path)) == first and len(calls) == len(first)
  args.resume = False  # Without --resume every run trains again.
  assert [r['eval_loss'] for r in quality.sweep(args, str(tmp_path))] != [
      r['eval_loss'] for r in first]


def test_quality_bad_arguments_name_the_valid_ones(capsys):
  with pytest.raises(SystemExit):
    quality.parse_args(['--tasks', 'recall,listopz'])
  assert "['listopz']" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    quality.parse_args(['--seeds', '0,x'])
  assert 'comma-separated integers' in capsys.readouterr().err


def test_oversized_configs_are_skipped_without_running(tmp_path):
  """A size that cannot fit is recorded as skipped (and larger ones after it); nothing crashes."""
  args = kernels.parse_args(['--kernels', 'softmax', '--ns', '4194304,8388608', '--max_n_linear', '0'])
  results = kernels.sweep(args, '/nonexistent/script.py', dict(batch=1, heads=8, head_dim=64, chunk=64),
                          {'platform': 'cpu'})
  assert [(r['mode'], r['n'], r['status']) for r in results] == [
      ('fwd', 4194304, 'skipped'), ('fwd', 8388608, 'skipped'),
      ('fwd_bwd', 4194304, 'skipped'), ('fwd_bwd', 8388608, 'skipped')]
  assert 'GiB' in results[0]['reason'] and 'smaller n' in results[1]['reason']


@pytest.mark.slow
def test_sequence_memory_quick(tmp_path):
  """Splitting the sequence over 8 devices shrinks each device's compiled train step, its
  temporaries grow with n at a fraction of the one-device step's rate, and each cell ran."""
  proc = subprocess.run([sys.executable, os.path.join(BENCH, 'sequence_memory.py'), '--quick',
                         '--out', str(tmp_path)], capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(tmp_path / 'sequence_memory.json') as f:
    report = json.load(f)
  assert report['benchmark'] == 'sequence_memory' and report['run'] == 'quick'
  assert report['device']['device_count'] == 8 and report['devices'] == [1, 8]
  rows = report['results']
  for row in rows:
    one, split = row['sequence_1'], row['sequence_8']
    assert 0 < split['total'] < one['total'] and split['arguments'] <= one['arguments'], row
    for cell in (one, split):
      assert cell['tokens_per_sec'] == pytest.approx(row['batch'] * row['n'] / cell['step_s'])
  (short, long), temps = rows, lambda row, where: row[where]['temporaries']
  assert long['n'] == 2 * short['n']
  assert (temps(long, 'sequence_8') - temps(short, 'sequence_8')
          < (temps(long, 'sequence_1') - temps(short, 'sequence_1')) / 4)
  assert '| 2048 | 8 |' in (tmp_path / 'sequence_memory.md').read_text()


def test_sequence_memory_rejects_bad_devices(capsys):
  import sequence_memory  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):
    sequence_memory.main(['--devices', '1,3', '--out', '/nonexistent'])
  assert '--devices [3]: each must divide the 8 host devices' in capsys.readouterr().err


@pytest.mark.parametrize('body,expected', [
    ('import os, signal; os.kill(os.getpid(), signal.SIGKILL)', 'killed by signal 9'),
    ('import time; time.sleep(30)', 'timeout after 1 s'),
    ('raise SystemExit("boom")', 'worker failed (exit 1): boom'),
    ('print("@@RESULT@@ " + \'{"status": "ok", "x": 1}\')', None),
])
def test_run_worker_never_raises(tmp_path, body, expected):
  script = tmp_path / 'worker.py'
  script.write_text(body + '\n')
  result = harness.run_worker(str(script), {}, timeout_s=1 if 'sleep' in body else 30)
  if expected is None:
    assert result['status'] == 'ok' and result['x'] == 1
  else:
    assert result['status'] == 'failed' and result['reason'].startswith(expected)


def test_quick_runs_never_overwrite_full_results():
  assert harness.default_out('kernels', True) != harness.default_out('kernels', False)
  assert harness.default_out('kernels', True).endswith(os.path.join('benchmarks', 'quick', 'kernels'))
  # Smoke-run outputs are git-ignored.
  with open(os.path.join(REPO, '.gitignore')) as f:
    assert '/benchmarks/quick/' in f.read().split()


@pytest.mark.slow
def test_mesh_vs_pmap_quick(tmp_path):
  """pmap and the fsdp mesh train the same steps (equal losses) and each reports its tokens/s."""
  proc = subprocess.run([sys.executable, os.path.join(BENCH, 'mesh_vs_pmap.py'), '--quick',
                         '--out', str(tmp_path)], capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(tmp_path / 'mesh_vs_pmap.json') as f:
    report = json.load(f)
  assert report['benchmark'] == 'mesh_vs_pmap' and report['device']['device_count'] == 8
  pmap, fsdp = report['results']
  assert (pmap['layout'], fsdp['layout']) == ('pmap', 'fsdp:8')
  assert '--config.mesh=data:1,fsdp:8,sequence:1' in fsdp['command']
  for row in (pmap, fsdp):
    assert row['status'] == 'ok' and len(row['windows']) == report['steps'] - 1, row
    assert row['tokens_per_sec'] == pytest.approx(statistics.median(row['windows'][1:]))
  assert abs(fsdp['final_train_loss'] - pmap['final_train_loss']) <= 1e-5 * pmap['final_train_loss']
  assert '| mesh fsdp:8 |' in (tmp_path / 'mesh_vs_pmap.md').read_text()
  assert not os.listdir(tmp_path / 'tmp')  # each run's workdir removed


def test_mesh_vs_pmap_rejects_unknown_layout(capsys):
  import mesh_vs_pmap  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):
    mesh_vs_pmap.main(['--layouts', 'pmap;data:3', '--out', '/nonexistent'])
  assert "unknown layout(s) ['data:3']" in capsys.readouterr().err


def test_hybrid_configs_compare_at_equal_depth():
  """Each hybrid config's layer pattern fills exactly the depth its single-kind peers get."""
  from linformer_jax import config_lib  # pylint: disable=g-import-not-at-top
  for task in hybrid_configs.TASKS:
    path, flags = hybrid_configs.command(task, 'hybrid', 0, False)
    model = config_lib.load(os.path.join(REPO, path)).model
    assert model.num_layers == hybrid_configs.LAYERS == len(model.layer_attention.split(','))
    assert model.layer_attention.split(',')[0] == 'softmax' and flags == ['--config.seed=0']
    for kind in ('linear', 'softmax', 'none'):
      path, flags = hybrid_configs.command(task, kind, 3, False)
      assert path == f'configs/{task}.py'
      assert f'--config.model.num_layers={hybrid_configs.LAYERS}' in flags
      assert '--config.seed=3' in flags
      assert (f'--config.model.attention={kind}' in flags) == (kind != 'linear')


def test_hybrid_configs_bad_arguments_name_the_valid_ones(capsys):
  for argv, message in ((['--kinds', 'hybrid,window'], "['window'] not valid; valid: ['hybrid', "),
                        (['--tasks', 'lm,image'], "['image'] not valid; valid: ['lm', 'mlm']"),
                        (['--seeds', '0,-1'], 'seeds must be non-negative integers'),
                        (['--seeds', '0,one'], "--seeds='0,one': seeds must be")):
    with pytest.raises(SystemExit):
      hybrid_configs.main(argv + ['--out', '/nonexistent'])
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_hybrid_configs_quick_runs_and_resumes(tmp_path, data_dir):
  """Two runs stored with their commands; the same command again trains nothing."""
  argv = [sys.executable, os.path.join(BENCH, 'hybrid_configs.py'), '--quick', '--tasks', 'lm',
          '--kinds', 'hybrid,none', '--data_dir', str(data_dir), '--out', str(tmp_path)]
  proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  runs = sorted(os.listdir(tmp_path / 'runs'))
  assert runs == ['lm_hybrid_seed_0.json', 'lm_none_seed_0.json']
  stamps = {}
  for name in runs:
    with open(tmp_path / 'runs' / name) as f:
      row = json.load(f)
    assert row['status'] == 'ok' and row['steps'] == hybrid_configs.QUICK['num_train_steps']
    assert row['baselines']['baseline_unigram_loss'] > 0 and row['tokens_per_sec'] > 0
    stamps[name] = os.path.getmtime(tmp_path / 'runs' / name)
  assert row['command'].startswith('python train.py --config=configs/lm.py ')
  assert not os.listdir(tmp_path / 'tmp')  # each run's workdir removed
  md = (tmp_path / 'hybrid_configs.md').read_text()
  assert '| hybrid |' in md and '| none |' in md and '| softmax |' not in md
  again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and '"status"' not in again.stdout  # nothing retrained
  assert {n: os.path.getmtime(tmp_path / 'runs' / n) for n in runs} == stamps
