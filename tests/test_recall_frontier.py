"""benchmarks/recall.py (MQAR accuracy against training tokens/s) and the remat it needs.

The --quick study runs end to end (training runs, throughput workers, report);
a rerun skips every finished run; the full plan is the grid the docstring
promises; ModelConfig.remat_attention changes no value and no gradient.
"""
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linformer_jax as lj

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import recall  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_full_plan_is_the_promised_grid():
  plan = recall.plan_train('full', *(recall.MODES['full'][k] for k in ('widths', 'pairs', 'kinds')),
                           None)
  assert len(plan) == len(recall.KINDS) * (6 + 2 * 2)  # 3 seeds in two cells, 1 in four
  assert len({name for name, *_ in plan}) == len(plan)  # one JSON per run
  by_cell = {}
  for _, kind, w, p, seed, o in plan:
    by_cell.setdefault((w, p), set()).add(seed)
    assert o['seq_len'] == 4 * p and o['model.num_layers'] == 8 and o['model.emb_dim'] == w
    assert o['key_vocab_size'] >= p
  assert by_cell == {(w, p): ({0, 1, 2} if (w, p) in ((128, 64), (128, 256)) else {0})
                     for w in (64, 128) for p in (16, 64, 256)}
  assert dict(next(o for n, k, *_, o in plan if k == 'hybrid 7:1'))[
      'model.layer_attention'].split(',') == ['linear'] * 7 + ['softmax']
  # Every kind's model is a valid ModelConfig at the throughput length.
  for name, kind, w, spec in recall.plan_throughput('full', (64, 128), tuple(recall.KINDS)):
    cfg = lj.ModelConfig(max_len=spec['seq_len'], attention=spec['attention'], **spec['model'])
    assert cfg.remat_attention == ('softmax' in cfg.layer_kinds) and spec['batch'] == 1
    assert spec['seq_len'] == 16384 and cfg.num_layers == 8 and cfg.causal
    assert spec['reps'] == 3 and spec['budget_s'] == recall.MODES['full']['budget_s']
  # --seeds picks from what each cell plans: seed 2 exists only in the two target cells.
  later = recall.plan_train('full', (64, 128), (64,), ('linear',), None, seeds=(1, 2))
  assert [(w, seed) for _, _, w, _, seed, _ in later] == [(128, 1), (128, 2)]
  (_, _, _, one), = recall.plan_throughput('full', (128,), ('softmax',), reps=1)
  assert one['reps'] == 1 and one['budget_s'] == recall.MODES['full']['budget_s'] / 3


def test_a_cut_off_run_resumes_only_its_own_config(tmp_path):
  from linformer_jax import config_lib  # pylint: disable=g-import-not-at-top
  from linformer_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  (*_, o), = recall.plan_train('quick', (16,), (2,), ('linear',), None)
  load = lambda **changes: config_lib.load(os.path.join(REPO, recall.CONFIG), dict(o, **changes))
  wd = tmp_path / 'run'
  assert recall.resume_or_clear(str(wd), load()) == []  # nothing there yet
  def killed(checkpoint):
    """What a process killed at step 60 leaves: config, maybe its step-60 checkpoint, a
    metrics line last written at t = 1030 and its own start (1020) after an earlier process's."""
    workdir_lib.prepare(str(wd))
    workdir_lib.record_config(str(wd), load(), {}, 0)
    if checkpoint:
      os.makedirs(wd / 'checkpoints' / '60')
    (wd / 'metrics.jsonl').write_text('{"step": 60}\n')
    os.utime(wd / 'metrics.jsonl', (1030.0, 1030.0))
    (wd / recall.WALL_FILE).write_text(json.dumps([[1000.0, 1010.0], [1020.0, None]]))

  killed(checkpoint=False)
  assert recall.resume_or_clear(str(wd), load()) == []  # no checkpoint: starts over
  assert not wd.exists()
  killed(checkpoint=True)
  assert recall.resume_or_clear(str(wd), load()) == [[1000.0, 1010.0], [1020.0, 1030.0]]
  assert (wd / 'checkpoints' / '60').is_dir()  # kept for the trainer to resume
  # Another config in the same workdir (here another seed) is cleared, not continued.
  assert recall.resume_or_clear(str(wd), load(seed=1)) == [] and not wd.exists()


def test_softmax_trains_blocked_on_cpu_from_1024_tokens():
  (*_, long), = recall.plan_train('full', (128,), (256,), ('softmax',), None, seeds=(0,))
  assert recall.fit_backend(long, 'cpu')['model.implementation'] == 'blocked'
  assert 'model.implementation' not in long  # the plan itself is the same everywhere
  assert recall.fit_backend(long, 'gpu') == long
  (*_, short), = recall.plan_train('full', (128,), (64,), ('softmax',), None, seeds=(0,))
  (*_, hybrid), = recall.plan_train('full', (128,), (256,), ('hybrid 7:1 first',), None, seeds=(0,))
  assert recall.fit_backend(short, 'cpu') == short and recall.fit_backend(hybrid, 'cpu') == hybrid


def test_bad_arguments_are_named(capsys):
  for argv, match in ((['--kinds', 'linear,performer'], "unknown kind(s) ['performer']"),
                      (['--widths', '64,x'], "--widths='64,x' must be comma-separated integers"),
                      (['--steps', '0'], '--steps must be positive, got 0'),
                      (['--reps', '-1'], '--reps must be positive, got -1'),
                      (['--seeds', '0,3'], '--seeds=0,3: the grid plans seeds 0,1,2 at most'),
                      (['--seeds', 'one'], "--seeds='one' must be comma-separated integers"),
                      (['plot'], "invalid choice: 'plot'")):
    with pytest.raises(SystemExit):
      recall.parse_args(argv)
    assert match in capsys.readouterr().err


def test_plot_marks_a_row_trained_longer():
  row = lambda kind, steps, acc: {'kind': kind, 'width': 128, 'pairs': 64, 'steps': steps,
                                  'accuracy_mean': acc, 'accuracy_std': None,
                                  'tokens_per_s': 5000.0}
  summary = [row('linear', 600, 0.4), row('softmax', 600, 1.0), row('linear', 1200, 0.9)]
  assert recall.grid_steps(summary) == 600 and recall.grid_steps([]) is None
  fig = recall.figure({'summary': summary, 'throughput_n': 16384, 'runs': [], 'run': 'full',
                       'grid_runs': 110, 'grid_runs_done': 0})
  lines = {bars.get_label(): bars.lines[0] for bars in fig.axes[0].containers}  # the data line
  assert set(lines) == {'linear, width 128', 'softmax, width 128', 'linear, width 128, 1200 steps'}
  assert lines['linear, width 128, 1200 steps'].get_markerfacecolor() == 'none'
  assert lines['linear, width 128'].get_markerfacecolor() != 'none'


@pytest.mark.slow  # ~50 s on 2 shared cores: two runs of the real trainer, two worker processes
def test_quick_study_runs_resumes_and_reports(tmp_path, capsys):
  out = str(tmp_path)
  recall.main(['--quick', '--out', out])
  with open(os.path.join(out, 'recall.json')) as f:
    report = json.load(f)
  assert report['planned_runs'] == len(report['runs']) == report['grid_runs'] == 2
  assert report['planned_throughput'] == len(report['throughput']) == 2
  assert {r['kind'] for r in report['runs']} == {'linear', 'linear+window'}
  for r in report['runs']:
    assert r['status'] == 'ok' and r['steps'] == 2 and 0 <= r['eval_accuracy'] <= 1
  for r in report['throughput']:
    assert r['status'] == 'ok' and r['tokens_per_s'] > 0
  assert all(r['tokens_per_s'] for r in report['summary'])
  with open(os.path.join(out, 'recall.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  md = (tmp_path / 'recall.md').read_text()
  assert report['grid_runs_done'] == report['planned_runs_done'] == 2
  assert md.startswith('# Recall against cost (quick grid, complete)')
  assert md.count('| 2 | 16 | 2 |') == 2  # one accuracy row per kind of the one cell
  assert all(len(r['steps_to_99']) == 1 for r in report['summary'])
  # A rerun trains and measures nothing again: every run's JSON is there.
  capsys.readouterr()
  recall.main(['--quick', '--out', out])
  printed = capsys.readouterr().out
  assert printed.count('done before, skipped') == 4
  # A run whose JSON is gone but whose workdir holds its last checkpoint is taken up there:
  # nothing is trained again, and the same evaluations come back, with both processes' time.
  first, = (r for r in report['runs'] if r['kind'] == 'linear')
  os.remove(os.path.join(out, 'runs', first['name'] + '.json'))
  recall.main(['--quick', '--out', out, 'report'])  # the report says what is missing
  assert (tmp_path / 'recall.md').read_text().startswith('# Recall against cost (quick grid, partial)')
  recall.main(['--quick', '--out', out, 'train'])
  with open(os.path.join(out, 'runs', first['name'] + '.json')) as f:
    again = json.load(f)
  assert again['curve'] == first['curve'] and again['processes'] == 2
  assert again['wall_s'] >= first['wall_s']


@pytest.mark.slow
def test_remat_attention_changes_no_value_or_gradient():
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 20)), jnp.int32)
  cfg = lj.tiny(attention='softmax', causal=True, num_layers=1)
  model, remat = lj.MLMModel(cfg), lj.MLMModel(dataclasses.replace(cfg, remat_attention=True))
  params = model.init(jax.random.key(0), tokens)
  loss = lambda m: lambda p: jnp.mean(m.apply(p, tokens) ** 2)
  want, want_grad = jax.value_and_grad(loss(model))(params)
  got, got_grad = jax.value_and_grad(loss(remat))(params)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got_grad,
               want_grad)
  # The kernel really runs under jax.checkpoint: one more remat per layer in the gradient's
  # jaxpr (some kernels use their own too).
  count = lambda m: str(jax.make_jaxpr(jax.grad(loss(m)))(params)).count('remat2[')
  assert count(remat) == count(model) + cfg.num_layers
  with pytest.raises(ValueError, match="remat_attention must be True or False, got 'yes'"):
    lj.tiny(remat_attention='yes')
