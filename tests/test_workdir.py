"""The workdir: writability, stored config (changes refused unless allowed), lock, parameters."""
import json
import os
import re
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from linformer_jax import checkpoints
from linformer_jax import workdir as wd


def _config(**overrides):
  config = ml_collections.ConfigDict({
      'seed': 0, 'learning_rate': 1e-3, 'num_train_steps': 100, 'log_every_steps': 10,
      'allow_changed': '', 'data_dir': '/data', 'model': {'emb_dim': 32, 'attention': 'linear'}})
  for key, value in overrides.items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def _stored(workdir):
  with open(os.path.join(workdir, wd.CONFIG_FILE)) as f:
    return json.load(f)


def test_prepare_creates_the_workdir_and_leaves_only_what_was_there(tmp_path):
  workdir = tmp_path / 'runs' / 'a'
  wd.prepare(str(workdir))
  assert os.listdir(workdir) == []
  (workdir / 'metrics.jsonl').write_text('kept')
  wd.prepare(str(workdir))
  assert os.listdir(workdir) == ['metrics.jsonl']
  assert (workdir / 'metrics.jsonl').read_text() == 'kept'


@pytest.mark.parametrize('where', ['a_file', 'under_a_file'])
def test_prepare_refuses_an_unwritable_workdir(tmp_path, where):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  workdir = str(blocker if where == 'a_file' else blocker / 'run')
  message = f'^workdir {re.escape(repr(workdir))} is not a writable directory: '
  with pytest.raises(ValueError, match=message):
    wd.prepare(workdir)
  assert blocker.read_text() == 'not a directory'


def test_load_config_needs_a_workdir_with_a_config(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    wd.load_config(str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match=f'{re.escape(repr(str(tmp_path)))} holds no config.json: '
                                       'not a training workdir'):
    wd.load_config(str(tmp_path))


def test_load_config_rebuilds_the_stored_config(tmp_path):
  wd.record_config(str(tmp_path), _config(), {}, step=0)
  changed = _config(num_train_steps=300, allow_changed='num_train_steps')
  wd.record_config(str(tmp_path), changed, wd.check_config(str(tmp_path), changed), step=100)
  loaded = wd.load_config(str(tmp_path))
  assert loaded.model.emb_dim == 32 and loaded.num_train_steps == 300
  assert wd.flatten(loaded) == wd.flatten(changed)


def test_flatten():
  assert wd.flatten(_config()) == {
      'seed': 0, 'learning_rate': 1e-3, 'num_train_steps': 100, 'log_every_steps': 10,
      'allow_changed': '', 'data_dir': '/data', 'model.emb_dim': 32, 'model.attention': 'linear'}


def test_first_start_stores_the_config(tmp_path):
  workdir = str(tmp_path)
  assert wd.check_config(workdir, _config()) == {}
  wd.record_config(workdir, _config(), {}, step=0)
  assert _stored(workdir) == {'config': wd.flatten(_config()), 'changes': []}
  assert wd.check_config(workdir, _config()) == {}  # The same config resumes.


@pytest.mark.parametrize('overrides', [
    {'model.emb_dim': 64},                      # A shape: Orbax would fail deep inside.
    {'model.attention': 'elu_linear'},          # Same shapes: would resume silently.
    {'seed': 1}, {'learning_rate': 2e-3}, {'data_dir': '/other'}, {'num_train_steps': 200},
])
def test_changed_setting_is_refused_with_the_keys(tmp_path, overrides):
  workdir = str(tmp_path)
  wd.record_config(workdir, _config(), {}, step=0)
  before = _stored(workdir)
  (key, new), = overrides.items()
  old = wd.flatten(_config())[key]
  with pytest.raises(ValueError) as error:
    wd.check_config(workdir, _config(**overrides))
  message = str(error.value)
  assert f'  {key}: {old!r} -> {new!r}' in message
  assert '--workdir' in message and f'--config.allow_changed={key}' in message
  assert _stored(workdir) == before


def test_several_changes_are_all_listed(tmp_path):
  wd.record_config(str(tmp_path), _config(), {}, step=0)
  with pytest.raises(ValueError, match=r'(?s)model.emb_dim: 32 -> 64\n  seed: 0 -> 3\n.*'
                                       r'allow_changed=model.emb_dim,seed$'):
    wd.check_config(str(tmp_path), _config(**{'model.emb_dim': 64, 'seed': 3}))


def test_safe_and_allowed_changes_are_recorded(tmp_path):
  workdir = str(tmp_path)
  wd.record_config(workdir, _config(), {}, step=0)
  new = _config(log_every_steps=5, num_train_steps=300, allow_changed='num_train_steps')
  changes = wd.check_config(workdir, new)
  assert changes == {'allow_changed': ('', 'num_train_steps'), 'log_every_steps': (10, 5),
                     'num_train_steps': (100, 300)}
  wd.record_config(workdir, new, changes, step=100)
  stored = _stored(workdir)
  assert stored['config'] == wd.flatten(new)
  assert stored['changes'] == [{'step': 100, 'keys': {
      'allow_changed': ['', 'num_train_steps'], 'log_every_steps': [10, 5],
      'num_train_steps': [100, 300]}}]
  # The new settings are now the stored ones: resuming with them needs no opt-in.
  assert wd.check_config(workdir, _config(log_every_steps=5, num_train_steps=300)) == {
      'allow_changed': ('num_train_steps', '')}


def test_new_and_removed_keys_count_as_changes(tmp_path):
  wd.record_config(str(tmp_path), _config(), {}, step=0)
  config = _config()
  config.mask_rate = 0.2
  with pytest.raises(ValueError, match=r"mask_rate: '<absent>' -> 0.2"):
    wd.check_config(str(tmp_path), config)


def test_allow_changed_must_name_config_keys(tmp_path):
  wd.record_config(str(tmp_path), _config(), {}, step=0)
  with pytest.raises(ValueError, match=r"allow_changed names \['num_steps'\]"):
    wd.check_config(str(tmp_path), _config(allow_changed='num_steps'))


# ----------------------------------------------------------------------------- lock


def _write_lock(workdir, pid, host=None):
  with open(os.path.join(workdir, wd.LOCK_FILE), 'w') as f:
    json.dump({'pid': pid, 'host': host or socket.gethostname()}, f)


def test_lock_is_held_and_released(tmp_path):
  path = os.path.join(tmp_path, wd.LOCK_FILE)
  with wd.lock(str(tmp_path)):
    with open(path) as f:
      assert json.load(f) == {'pid': os.getpid(), 'host': socket.gethostname()}
    with pytest.raises(RuntimeError, match=rf'process {os.getpid()} on host .* holds {path}'):
      with wd.lock(str(tmp_path)):
        pass
  assert not os.path.exists(path)


def test_lock_is_released_on_exceptions(tmp_path):
  with pytest.raises(KeyError):
    with wd.lock(str(tmp_path)):
      raise KeyError('boom')
  assert not os.path.exists(os.path.join(tmp_path, wd.LOCK_FILE))


def test_live_owner_stops_a_second_run(tmp_path):
  owner = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    _write_lock(str(tmp_path), owner.pid)
    with pytest.raises(RuntimeError, match=f'process {owner.pid} on host'):
      with wd.lock(str(tmp_path)):
        pass
  finally:
    owner.kill()
    owner.wait()
  with open(os.path.join(tmp_path, wd.LOCK_FILE)) as f:
    assert json.load(f)['pid'] == owner.pid  # Left alone.


def test_stale_lock_is_taken_over(tmp_path, caplog):
  gone = subprocess.Popen([sys.executable, '-c', 'pass'])
  gone.wait()
  _write_lock(str(tmp_path), gone.pid)
  with wd.lock(str(tmp_path)):
    with open(os.path.join(tmp_path, wd.LOCK_FILE)) as f:
      assert json.load(f)['pid'] == os.getpid()
  assert 'stale lock' in caplog.text and str(gone.pid) in caplog.text


def test_lock_of_another_host_is_respected(tmp_path):
  gone = subprocess.Popen([sys.executable, '-c', 'pass'])
  gone.wait()
  _write_lock(str(tmp_path), gone.pid, host='elsewhere')  # Its pid means nothing here.
  with pytest.raises(RuntimeError, match='on host elsewhere'):
    with wd.lock(str(tmp_path)):
      pass


def test_disabled_lock_writes_nothing(tmp_path):
  with wd.lock(str(tmp_path), enabled=False):
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- parameters


def _state(step):
  return {'step': np.int32(step),
          'params': {'dense': {'kernel': np.full((4, 3), step, np.float32)},
                     'bias': np.arange(3.0, dtype=np.float32) + step},
          'opt_state': {'mu': np.full((4, 3), -step, np.float32)}}


def _params_target():
  return jax.eval_shape(lambda: _state(0)['params'])


def _never_called():
  raise AssertionError('params_target was called before a checkpoint was found')


def test_restore_params_without_checkpoints_names_the_folder(tmp_path):
  with pytest.raises(ValueError, match=f'workdir {re.escape(repr(str(tmp_path)))} has no '
                                       'checkpoints/ folder: nothing to restore. Give the workdir'):
    wd.restore_params(str(tmp_path), _never_called)
  assert os.listdir(tmp_path) == []  # Nothing written.
  folder = os.path.join(tmp_path, checkpoints.CHECKPOINT_DIR)
  os.mkdir(folder)
  with pytest.raises(ValueError, match=f'^{re.escape(folder)} holds no checkpoint yet'):
    wd.restore_params(str(tmp_path), _never_called)


@pytest.mark.parametrize('lazy', [True, False])
def test_restore_params_gives_the_latest_checkpoints_params(tmp_path, lazy):
  manager = checkpoints.create_manager(str(tmp_path), keep=5)
  for step in (2, 4):
    checkpoints.save(manager, step, _state(step))
  manager.wait_until_finished()
  manager.close()
  params, step = wd.restore_params(str(tmp_path), _params_target if lazy else _params_target())
  assert step == 4
  assert jax.tree.structure(params) == jax.tree.structure(_state(4)['params'])
  jax.tree.map(np.testing.assert_array_equal, params, _state(4)['params'])
