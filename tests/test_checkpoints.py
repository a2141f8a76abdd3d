"""Checkpoint restore: the newest checkpoint that restores wins; damaged ones are kept."""
import glob
import os
import shutil

import jax
import numpy as np
import pytest

from linformer_jax import checkpoints


def _state(step):
  return {'params': {'w': np.full((64, 8), step, np.float32), 'b': np.arange(8.0) + step},
          'step': np.int32(step)}


def _abstract():
  return jax.eval_shape(lambda: _state(0))


@pytest.fixture
def workdir(tmp_path):
  manager = checkpoints.create_manager(str(tmp_path), keep=5)
  for step in (10, 20, 30):
    checkpoints.save(manager, step, _state(step))
  manager.wait_until_finished()
  manager.close()
  return str(tmp_path)


def _damage(step_dir, how):
  if how == 'truncated':
    files = [f for f in glob.glob(os.path.join(step_dir, '**', 'd', '*'), recursive=True)
             if os.path.isfile(f)]
    for f in files:
      with open(f, 'r+b') as handle:
        handle.truncate(os.path.getsize(f) // 2)
  elif how == 'empty':
    shutil.rmtree(step_dir)
    os.mkdir(step_dir)
  elif how == 'no_metadata':
    os.remove(os.path.join(step_dir, 'default', '_METADATA'))
  elif how == 'no_array_data':
    for d in glob.glob(os.path.join(step_dir, 'default', '**', 'd'), recursive=True):
      shutil.rmtree(d)


def _restore(workdir):
  manager = checkpoints.create_manager(workdir, keep=5)
  try:
    return checkpoints.restore_latest(manager, _abstract())
  finally:
    manager.close()


def test_no_checkpoint(tmp_path):
  assert _restore(str(tmp_path)) == (None, 0)


def test_latest_restores_exactly(workdir):
  state, step = _restore(workdir)
  assert step == 30
  jax.tree.map(np.testing.assert_array_equal, state, _state(30))


@pytest.mark.parametrize('how', ['truncated', 'empty', 'no_array_data'])
def test_damaged_latest_falls_back_and_is_kept(workdir, how):
  ckpt = os.path.join(workdir, 'checkpoints')
  _damage(os.path.join(ckpt, '30'), how)
  state, step = _restore(workdir)
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, state, _state(20))
  # Moved aside, not deleted: the run can save step 30 again.
  assert sorted(os.listdir(ckpt)) == ['10', '20']
  assert os.listdir(os.path.join(workdir, checkpoints.UNRESTORABLE_DIR)) == ['30']
  manager = checkpoints.create_manager(workdir, keep=5)
  checkpoints.save(manager, 30, _state(30))
  manager.close()
  assert _restore(workdir)[1] == 30


def test_missing_metadata_still_restores_the_right_values(workdir):
  # Orbax can restore without _METADATA given the target's structure; if it
  # ever cannot, the fallback must give step 20 instead. Wrong values never.
  _damage(os.path.join(workdir, 'checkpoints', '30'), 'no_metadata')
  state, step = _restore(workdir)
  assert step in (20, 30)
  jax.tree.map(np.testing.assert_array_equal, state, _state(step))


def test_nothing_restorable_names_the_folder_and_moves_nothing(workdir):
  ckpt = os.path.join(workdir, 'checkpoints')
  for step in ('10', '20', '30'):
    _damage(os.path.join(ckpt, step), 'empty')
  with pytest.raises(ValueError, match=rf"No checkpoint in {ckpt} can be restored \(steps 30, "
                                       r"20, 10; .*new --workdir"):
    _restore(workdir)
  assert sorted(os.listdir(ckpt)) == ['10', '20', '30']
  assert not os.path.exists(os.path.join(workdir, checkpoints.UNRESTORABLE_DIR))


def test_a_changed_shape_is_not_taken_for_damage(workdir):
  manager = checkpoints.create_manager(workdir, keep=5)
  other = jax.eval_shape(lambda: {**_state(0), 'params': {'w': np.zeros((32, 8), np.float32),
                                                          'b': np.zeros(8)}})
  with pytest.raises(ValueError, match='No checkpoint .* can be restored'):
    checkpoints.restore_latest(manager, other)
  manager.close()
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '20', '30']


def test_restore_params_reads_one_steps_params(workdir):
  manager = checkpoints.create_manager(workdir, keep=5)
  params = checkpoints.restore_params(manager, jax.eval_shape(lambda: _state(0)['params']), 20)
  manager.close()
  jax.tree.map(np.testing.assert_array_equal, params, _state(20)['params'])
