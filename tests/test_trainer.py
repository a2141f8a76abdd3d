"""trainer.py: configs, exact data parallelism and resume, bad inputs, recompiles, multi-host.

Compilation dominates these tests' time, so: every MLM run shares one tiny
config (TINY), compiled once per session and then served by conftest.py's
compilation cache, here and in the subprocesses that restart, kill or spread a
run; and XLA runs with most optimizations off (half the compile time, in this
process and in every subprocess alike, so exact comparisons stay exact).
Full training runs, multi-device and multi-process runs are marked slow; the
fast tests check the loop's pieces and that bad input stops before any work.
"""
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import chex
import flax
import jax
import numpy as np
import pytest

from linformer_jax import checkpoints
from linformer_jax import config_lib
from linformer_jax import metrics
from linformer_jax import trainer
from linformer_jax import workdir as workdir_lib
from linformer_jax.data import text

import helpers

REPO = helpers.REPO
MLM_CONFIG = helpers.config_path('mlm.py')
# Every runnable config (base.py names no task).
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(helpers.CONFIGS, '*.py'))
                      if os.path.basename(p) != 'base.py')
TINY = helpers.tiny_overrides('mlm.py', **{'model.dropout_rate': 0.1})


# ----------------------------------------------------------------------------- helpers


def subprocess_env(**extra):
  return {**os.environ, 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true', **extra}


load_config = config_lib.load


def flags(overrides):
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def entry_command(workdir, overrides, config_file=MLM_CONFIG):
  return [sys.executable, os.path.join(REPO, 'train.py'), f'--config={config_file}',
          f'--workdir={workdir}'] + flags(overrides)


def run_entry(workdir, overrides, timeout=600):
  result = subprocess.run(entry_command(workdir, overrides), cwd=REPO, env=subprocess_env(),
                          timeout=timeout, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]
  return result


def logged(workdir):
  """metrics.jsonl without the clock-dependent fields."""
  return [{k: v for k, v in r.items() if k not in trainer.TIMING_METRICS}
          for r in metrics.read_metrics(workdir)]


def assert_same_metrics(actual, expected, rtol=1e-6):
  assert [r['step'] for r in actual] == [r['step'] for r in expected]
  for a, e in zip(actual, expected):
    assert a.keys() == e.keys(), a['step']
    np.testing.assert_allclose([a[k] for k in sorted(a)], [e[k] for k in sorted(e)], rtol=rtol,
                               err_msg=f'step {a["step"]}')


def assert_same_params(actual, expected, rtol=1e-6, atol=1e-7):
  chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


def without_key_bias(params):
  """params without the attention key biases.

  The paper's attention (TINY's) normalises each key feature over positions,
  which a per-feature shift of the keys leaves unchanged: the key bias has zero
  true gradient. What it gets is float round-off, which Adam scales up to
  +-lr steps, different for every way of splitting the sums over devices and
  without effect on any output. Every other parameter must agree.
  """
  flat = flax.traverse_util.flatten_dict(params)
  return {k: v for k, v in flat.items() if k[-2:] != ('key', 'bias')}


def snapshot(directory):
  """{relative path: sha256} of every file below `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


@pytest.fixture(scope='module')
def tiny(data_dir):
  """TINY's overrides, data_dir included (also as command-line flags)."""
  return {**TINY, 'data_dir': data_dir}


@pytest.fixture(scope='module')
def straight(tiny, tmp_path_factory):
  """TINY trained start to finish in one process: (workdir, final state)."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  state = trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)
  return workdir, state


# ----------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_straight_run_writes_checkpoints_metrics_and_tensorboard(straight):
  workdir, state = straight
  assert int(state.step) == TINY['num_train_steps']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['100', '80', '90']
  records = metrics.read_metrics(workdir)
  assert [r['step'] for r in records] == [0] + list(range(10, 101, 10))
  assert records[0].keys() == {'step', 'baseline_unigram_loss', 'baseline_bigram_loss'}
  assert {'train_loss', 'train_accuracy', 'train_perplexity', 'learning_rate', 'grad_norm',
          'param_norm', 'steps_per_sec', 'tokens_per_sec'} <= records[1].keys()
  assert {'eval_loss', 'eval_accuracy', 'eval_perplexity'} <= records[5].keys()  # step 50
  assert 'eval_loss' in records[-1]
  assert not os.path.exists(os.path.join(workdir, 'lock'))  # Released at the end.
  assert glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))


@pytest.mark.slow
def test_loss_falls(straight):
  records = metrics.read_metrics(straight[0])[1:]  # Past the baselines at step 0.
  first, last = records[0]['train_loss'], records[-1]['train_loss']
  assert last < 0.8 * first, (first, last)
  evals = [r['eval_loss'] for r in records if 'eval_loss' in r]
  assert evals[-1] < evals[0]


@pytest.mark.slow
def test_finished_run_just_reports_done(straight, tiny):
  workdir, state = straight
  before = snapshot(workdir)
  again = trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)
  assert_same_params(again.params, state.params, rtol=0, atol=0)
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_resume_in_a_new_process_is_exact(straight, tiny, tmp_path):
  workdir = str(tmp_path)
  trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir, stop_after_step=50)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['30', '40', '50']
  run_entry(workdir, tiny)  # A new process: restores step 50, trains 51..100.
  resumed = trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)  # Done: restores.
  assert int(resumed.step) == 100
  assert_same_params(resumed.params, straight[1].params)
  assert_same_params(resumed.opt_state, straight[1].opt_state)
  assert_same_metrics(logged(workdir), logged(straight[0]))


@pytest.mark.slow
def test_sigkill_leaves_a_checkpoint_that_resumes_exactly(straight, tiny, tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen(entry_command(workdir, tiny), cwd=REPO, env=subprocess_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = os.path.join(workdir, 'checkpoints', '10')
  try:
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  latest = checkpoints.create_manager(workdir, 3).latest_step()
  assert latest is not None and latest < 100
  resumed = trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)
  assert_same_params(resumed.params, straight[1].params)
  assert_same_metrics(logged(workdir), logged(straight[0]))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch):
  create = text.create_datasets

  def poisoned(config, *, start_step=0, **kwargs):
    train_iter, eval_batches = create(config, start_step=start_step, **kwargs)

    def batches():
      for step, batch in enumerate(train_iter, start_step):
        if step == 24:  # The batch of update 25.
          batch = {**batch, 'weights': np.full_like(batch['weights'], np.nan)}
        yield batch
    return batches(), eval_batches

  monkeypatch.setattr(text, 'create_datasets', poisoned)
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=r'non-finite loss=nan at step 25.*step 20\)'):
    trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)
  assert checkpoints.create_manager(workdir, 3).all_steps() == [10, 20]
  assert metrics.read_metrics(workdir)[-1]['step'] == 20
  assert not os.path.exists(os.path.join(workdir, 'lock'))  # Released on the exception.
  # The run ends at its checkpoint: nothing to do but restore it.
  state = trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir, stop_after_step=20)
  assert int(state.step) == 20
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


@pytest.mark.slow
def test_allowed_config_change_is_recorded(straight, tiny, tmp_path):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(straight[0], workdir)
  before = metrics.read_metrics(workdir)
  config = load_config(MLM_CONFIG, {**tiny, 'learning_rate': 1e-3, 'log_every_steps': 5})
  config.allow_changed = 'learning_rate'  # '' in configs/base.py.
  state = trainer.train_and_evaluate(config, workdir)  # Done at step 100: records only.
  assert int(state.step) == 100
  with open(os.path.join(workdir, 'config.json')) as f:
    stored = json.load(f)
  assert stored['config']['learning_rate'] == 1e-3
  assert stored['changes'] == [{'step': 100, 'keys': {
      'allow_changed': ['', 'learning_rate'], 'learning_rate': [3e-3, 1e-3],
      'log_every_steps': [10, 5]}}]
  assert metrics.read_metrics(workdir) == before


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['truncated', 'empty'])
def test_damaged_latest_checkpoint_resumes_from_the_one_before(damage, straight, tiny, tmp_path):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(straight[0], workdir)
  latest = os.path.join(workdir, 'checkpoints', '100')
  if damage == 'empty':
    shutil.rmtree(latest)
    os.mkdir(latest)
  else:
    for path in glob.glob(os.path.join(latest, '**', 'd', '*'), recursive=True):
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  state = trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)  # 90 -> 100 again.
  assert int(state.step) == 100
  assert_same_params(state.params, straight[1].params)
  assert_same_metrics(logged(workdir), logged(straight[0]))
  assert os.listdir(os.path.join(workdir, checkpoints.UNRESTORABLE_DIR)) == ['100']


@pytest.mark.slow
def test_live_lock_stops_a_second_run(straight, tiny, tmp_path):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(straight[0], workdir)
  owner = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    with open(os.path.join(workdir, 'lock'), 'w') as f:
      json.dump({'pid': owner.pid, 'host': socket.gethostname()}, f)
    before = snapshot(workdir)
    with pytest.raises(RuntimeError, match=f'Another run is using workdir.*process {owner.pid}'):
      trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)
    assert snapshot(workdir) == before
  finally:
    owner.kill()
    owner.wait()
  # Its process gone, the lock is stale: the next run takes it over.
  trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)
  assert not os.path.exists(os.path.join(workdir, 'lock'))


def test_tilde_in_paths_is_expanded(tiny, data_dir, tmp_path, monkeypatch):
  home = tmp_path / 'home'
  home.mkdir()
  os.symlink(data_dir, home / 'tfds')
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(tmp_path)
  config = load_config(MLM_CONFIG, {**tiny, 'data_dir': '~/tfds', 'checkpoint_every_steps': 1})
  trainer.train_and_evaluate(config, '~/run', stop_after_step=1)
  assert os.listdir(home / 'run' / 'checkpoints') == ['1']
  assert sorted(os.listdir(tmp_path)) == ['home']  # No literal ./~ anywhere.
  with open(home / 'run' / 'config.json') as f:
    assert json.load(f)['config']['data_dir'] == str(home / 'tfds')


def test_train_step_compiles_once(tiny, tmp_path, monkeypatch):
  monkeypatch.setattr(trainer, 'train_step', chex.assert_max_traces(trainer.train_step, n=1))
  monkeypatch.setattr(trainer, 'eval_step', chex.assert_max_traces(trainer.eval_step, n=1))
  overrides = {**tiny, 'log_every_steps': 1, 'eval_every_steps': 2, 'checkpoint_every_steps': 3}
  state = trainer.train_and_evaluate(load_config(MLM_CONFIG, overrides), str(tmp_path),
                                   stop_after_step=6)
  assert int(state.step) == 6
  assert sum('eval_loss' in r for r in metrics.read_metrics(str(tmp_path))) == 3


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_every_config_trains_two_steps(path, data_dir, tmp_path):
  # TINY's schedule too: mlm.py then reuses its compilation.
  overrides = helpers.tiny_overrides(os.path.basename(path), checkpoint_every_steps=2)
  config = load_config(path, overrides)
  if 'data_dir' in config:
    config.data_dir = data_dir
  state = trainer.train_and_evaluate(config, str(tmp_path), stop_after_step=2)
  assert int(state.step) == 2
  assert os.listdir(os.path.join(tmp_path, 'checkpoints')) == ['2']
  records = metrics.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [0, 2]
  baselines = {k for k in records[0] if k.startswith('baseline_')}
  if config.task in ('mlm', 'lm'):
    assert baselines == {'baseline_unigram_loss', 'baseline_bigram_loss'}
  else:
    best_guess = {'classification': 'baseline_majority_accuracy',
                  'recall': 'baseline_mode_guess_accuracy'}[config.task]
    assert baselines == {'baseline_chance_loss', 'baseline_chance_accuracy', best_guess}
    np.testing.assert_allclose(records[0]['baseline_chance_loss'],
                               -np.log(records[0]['baseline_chance_accuracy']), rtol=1e-12)


def test_classification_task_end_to_end(tmp_path):
  # Token inputs and CLS pooling (configs/image.py covers float features): the
  # MLM config turned classifier, new keys added (the config is unlocked).
  overrides = {**helpers.TINY_MODEL, 'task': 'classification', 'dataset': 'listops',
               'listops_min_len': 8, 'listops_max_len': 48, 'model.pooling': 'cls',
               'num_train_examples': 64, 'num_eval_examples': 16, 'num_train_steps': 4,
               'warmup_steps': 1, 'num_eval_batches': 1}
  state = trainer.train_and_evaluate(load_config(MLM_CONFIG, overrides), str(tmp_path))
  assert 'head' in state.params
  records = metrics.read_metrics(str(tmp_path))
  assert records[-1]['step'] == 4 and 0 <= records[-1]['eval_accuracy'] <= 1
  assert np.isfinite(records[-1]['train_loss'])


@pytest.mark.parametrize('overrides, match', [
    ({'model.attention': 'nope'}, r"unknown attention 'nope'"),
    ({'model.max_len': 32}, r'seq_len=64 .*max_len=32'),
    ({'dataset': 'no_such_dataset'}, r"'no_such_dataset' is an unknown TFDS dataset"),
    ({'dataset': 'lm1b', 'data_dir': 'EMPTY'}, r"'lm1b' is not prepared"),
    ({'text_files': '/nonexistent/*.txt'}, r"'/nonexistent/\*\.txt' matches no files"),
    ({'task': 'translate'}, r"unknown task 'translate'"),
    ({'model.bogus': 1}, r"unknown config.model fields \['bogus'\]"),
    ({'learning_rate': -1.0}, r'learning_rate must be positive, got -1.0'),
    ({'model.dtype': 'bfloat'}, r"unknown dtype 'bfloat'; valid: \('float32', 'bfloat16'"),
    # The workdir holds a run with another config: shapes or not, it is refused.
    ({'model.emb_dim': 64}, r'(?s)model.emb_dim: 32 -> 64\n.*allow_changed=model.emb_dim'),
    ({'model.attention': 'elu_linear'}, r"model.attention: 'linear' -> 'elu_linear'"),
    ({'seed': 1, 'batch_size': 16}, r'(?s)batch_size: 8 -> 16\n  seed: 0 -> 1\n'),
    ({'text_files': 'TEXT'}, r"text_files: '' -> '.*\*.txt'"),
    ({'num_train_steps': 200}, r'num_train_steps: 100 -> 200'),
    # Bad text data: found before the workdir is touched.
    ({'text_files': 'EMPTY_FILES'}, r'all 2 matched files are empty'),
    ({'text_files': 'SHORT_FILE'}, r'fills 1 row\(s\) of seq_len=64; need at least 2'),
    ({'text_files': 'DIRECTORY'}, r'matches directories'),
])
def test_bad_input_fails_early_and_keeps_workdir(overrides, match, tiny, tmp_path, monkeypatch):
  # The workdir of a TINY run, as far as the checks see it: its stored config.
  workdir = str(tmp_path / 'workdir')
  os.makedirs(workdir)
  workdir_lib.record_config(workdir, load_config(MLM_CONFIG, tiny), {}, 0)
  before = snapshot(workdir)
  overrides = {**tiny, **{k: _make_input(tmp_path, v) for k, v in overrides.items()}}
  config = load_config(MLM_CONFIG, overrides)

  def too_late(*args, **kwargs):
    raise AssertionError('got past validation')

  # Neither data nor parameters are made before the config is found wanting.
  monkeypatch.setattr(text, 'create_datasets', too_late)
  monkeypatch.setattr(trainer, 'create_state', too_late)
  with pytest.raises(ValueError, match=match):
    trainer.train_and_evaluate(config, workdir)
  assert snapshot(workdir) == before


def _make_input(tmp_path, value):
  """The paths some bad inputs name, made in tmp_path; other values as they are."""
  text = tmp_path / 'text'
  if value == 'EMPTY':
    return str(tmp_path / 'empty')
  if value == 'TEXT':
    text.mkdir()
    (text / 'a.txt').write_text('some text ' * 100)
    return str(text / '*.txt')
  if value == 'EMPTY_FILES':
    text.mkdir()
    (text / 'a.txt').write_text('')
    (text / 'b.txt').write_text('')
    return str(text / '*.txt')
  if value == 'SHORT_FILE':
    text.mkdir()
    (text / 'a.txt').write_text('too short')
    return str(text / 'a.txt')
  if value == 'DIRECTORY':
    text.mkdir()
    return str(text)
  return value


@pytest.mark.parametrize('text_files', ['EMPTY_FILES', 'SHORT_FILE', 'DIRECTORY'])
def test_bad_text_data_leaves_no_workdir(text_files, tiny, tmp_path):
  config = load_config(MLM_CONFIG, {**tiny, 'text_files': _make_input(tmp_path, text_files)})
  with pytest.raises(ValueError, match='config.text_files='):
    trainer.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert not os.path.exists(tmp_path / 'workdir')


def test_unwritable_workdir(tiny, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  workdir = str(blocker / 'run')
  with pytest.raises(ValueError, match=f'workdir {workdir!r} is not a writable directory'):
    trainer.train_and_evaluate(load_config(MLM_CONFIG, tiny), workdir)


# The two-process run and its reference: short, as neither shares a compilation.
SHORT = {'num_train_steps': 12, 'log_every_steps': 4, 'eval_every_steps': 12,
         'checkpoint_every_steps': 4}

FAKE_DEVICES = r'''
import json, os, sys
import numpy as np
import jax
from linformer_jax import trainer
sys.path.insert(0, os.path.join({repo!r}, 'tests'))
from test_trainer import MLM_CONFIG, load_config, logged, snapshot, without_key_bias
assert jax.local_device_count() == 8, jax.devices()
tiny, tmp = json.loads({tiny!r}), {tmp!r}
out = {{}}

# Without dropout (each device draws its own masks), 8 devices = 1 device.
exact = {{**tiny, 'model.dropout_rate': 0.0}}
states = {{n: trainer.train_and_evaluate(load_config(MLM_CONFIG, exact), os.path.join(tmp, f'd{{n}}'),
                                       num_devices=n, stop_after_step=4) for n in (8, 1)}}
params = {{n: without_key_bias(states[n].params) for n in states}}
out['max_abs_diff'] = max(float(np.max(np.abs(params[8][k] - params[1][k]))) for k in params[1])
out['max_abs_param'] = max(float(np.max(np.abs(x))) for x in params[1].values())
out['metrics'] = {{n: logged(os.path.join(tmp, f'd{{n}}')) for n in states}}

before = snapshot(os.path.join(tmp, 'd8'))
try:
  trainer.train_and_evaluate(load_config(MLM_CONFIG, {{**exact, 'batch_size': 12}}),
                           os.path.join(tmp, 'd8'))
except ValueError as e:
  out['error'] = str(e)
out['unchanged'] = snapshot(os.path.join(tmp, 'd8')) == before

# The two-process test's reference: 2 devices fold the same device indices
# into their dropout keys as 2 processes of 1 device.
out['two_devices'] = os.path.join(tmp, 'd2')
trainer.train_and_evaluate(load_config(MLM_CONFIG, {{**tiny, **json.loads({short!r})}}),
                         out['two_devices'], num_devices=2)
print('RESULT', json.dumps(out))
'''


@pytest.fixture(scope='module')
def fake_devices(tiny, tmp_path_factory):
  # One subprocess (JAX fixes its device count at start) for all 8-device checks.
  tmp = str(tmp_path_factory.mktemp('fake_devices'))
  code = FAKE_DEVICES.format(repo=REPO, tiny=json.dumps(tiny), short=json.dumps(SHORT), tmp=tmp)
  env = subprocess_env(XLA_FLAGS='--xla_force_host_platform_device_count=8')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, timeout=600,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]
  line = [l for l in result.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


@pytest.mark.slow
def test_eight_devices_give_the_one_device_update(fake_devices):
  assert fake_devices['max_abs_param'] > 0.1
  assert fake_devices['max_abs_diff'] < 1e-6, fake_devices['max_abs_diff']
  assert_same_metrics(fake_devices['metrics']['8'], fake_devices['metrics']['1'], rtol=1e-6)


@pytest.mark.slow
def test_batch_not_divisible_by_devices(fake_devices):
  assert 'batch_size=12 is not divisible by the number of devices 8' in fake_devices['error']
  assert fake_devices['unchanged']


@pytest.mark.slow
def test_two_processes_on_localhost_match_two_devices(fake_devices, tiny, tmp_path):
  # Both processes restore the reference's step-8 checkpoint (the two layouts
  # compute the same numbers), train steps 9..12 and save step 12.
  reference_dir = fake_devices['two_devices']
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(reference_dir, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '12'))
  port = free_port()
  procs = []
  for i in range(2):
    env = subprocess_env(JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                         JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen(entry_command(workdir, {**tiny, **SHORT, 'distributed': True}),
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True))
  errors = [p.communicate(timeout=600)[1] for p in procs]
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-5000:]
  config = load_config(MLM_CONFIG, {**tiny, **SHORT})
  final = trainer.train_and_evaluate(config, workdir)  # Done: restores.
  reference = trainer.train_and_evaluate(config, reference_dir)
  assert int(final.step) == SHORT['num_train_steps']
  assert_same_params(final.params, reference.params)
  assert_same_metrics(logged(workdir), logged(reference_dir))


# ----------------------------------------------------------------------------- loop pieces


def test_learning_rate_schedule():
  config = load_config(MLM_CONFIG, {'learning_rate': 1.0, 'warmup_steps': 10,
                                    'num_train_steps': 110})
  schedule = trainer.learning_rate_schedule(config)
  steps = [0, 5, 10, 60, 110, 120]
  np.testing.assert_allclose([float(schedule(s)) for s in steps], [0, 0.5, 1, 0.5, 0, 0],
                             atol=1e-7)
  config.warmup_steps = 0
  schedule = trainer.learning_rate_schedule(config)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 55, 110)], [1, 0.5, 0], atol=1e-7)


def test_weight_decay_mask_is_weight_matrices_only():
  from linformer_jax import model_config  # pylint: disable=g-import-not-at-top
  from linformer_jax import models  # pylint: disable=g-import-not-at-top
  cfg = model_config.tiny(attention='linformer', num_layers=1)
  params = models.MLMModel(cfg).init(jax.random.PRNGKey(0), np.zeros((1, 16), np.int32))['params']
  mask = {'/'.join(k): v for k, v in flax.traverse_util.flatten_dict(trainer.decay_mask(params)).items()}
  flat = {'/'.join(k): v for k, v in flax.traverse_util.flatten_dict(params).items()}
  assert mask.keys() == flat.keys()
  assert all(flat[k].ndim >= 2 for k in mask if mask[k])  # Matrices only: no bias or scale.
  block = 'encoder/block_0/'
  expected = {block + 'attention/query/kernel': True, block + 'attention/out/kernel': True,
              block + 'attention/linformer_e': True, block + 'attention/linformer_f': True,
              block + 'Dense_0/kernel': True, 'mlm_dense/kernel': True,
              'embed/token_embed/embedding': False, 'embed/pos_embed': False,
              block + 'attention/query/bias': False, block + 'LayerNorm_0/scale': False,
              'encoder/final_norm/scale': False, 'mlm_bias': False}
  assert {k: mask[k] for k in expected} == expected


def _device_metrics(**values):
  """One step's metrics as train_step returns them under pmap (a device axis of 1)."""
  return {k: jax.device_put(np.array([v], np.float32)) for k, v in values.items()}


def test_summarize_train_weights_by_denominator():
  history = [_device_metrics(loss=2.0, accuracy=0.5, denominator=1.0, grad_norm=1.0,
                             param_norm=10.0, learning_rate=0.1),
             _device_metrics(loss=1.0, accuracy=0.25, denominator=3.0, grad_norm=3.0,
                             param_norm=20.0, learning_rate=0.2)]
  got = trainer._summarize_train(history, first_step=1)
  expected = {'train_loss': 1.25, 'train_accuracy': 0.3125, 'train_perplexity': np.exp(1.25),
              'grad_norm': 2.0, 'param_norm': 15.0, 'learning_rate': 0.2}
  assert got.keys() == expected.keys()
  np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)


@pytest.mark.parametrize('name', ['loss', 'grad_norm'])
def test_summarize_train_stops_at_the_first_non_finite_step(name):
  good = dict(loss=1.0, accuracy=0.5, denominator=1.0, grad_norm=1.0, param_norm=1.0,
              learning_rate=0.1)
  history = [_device_metrics(**good), _device_metrics(**{**good, name: np.inf}),
             _device_metrics(**{**good, name: np.nan})]
  with pytest.raises(FloatingPointError, match=f'non-finite {name}=inf at step 12'):
    trainer._summarize_train(history, first_step=11)

