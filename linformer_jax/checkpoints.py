"""Orbax checkpoints of the train state in workdir/checkpoints.

The pmap path saves the state as host numpy arrays: orbax writes those from
process 0 only, and every process restores the same values. The mesh path saves
its sharded arrays (each process writes its shards) and restores straight into
the shardings it trains with, whatever layout saved them: a checkpoint does not
record the device layout, so either path resumes the other's, on any mesh. A checkpoint appears under
its step's name only once it is complete, so a run killed while saving leaves
the previous one as the latest. One damaged afterwards (a truncated file, a
missing _METADATA, an emptied folder) is skipped for the newest that restores.
"""
import os
import shutil

from absl import logging
import jax
import orbax.checkpoint as ocp

# The checkpoints' folder in a workdir.
CHECKPOINT_DIR = 'checkpoints'
# Where restore_latest moves checkpoints newer than the one it restored but
# unreadable (kept for inspection, never deleted): the run will save those
# steps again, and orbax refuses to overwrite a step.
UNRESTORABLE_DIR = 'unrestorable_checkpoints'


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints; callers decide when to save."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      # Fixed, rather than guessed from the folders: orbax would take an empty
      # step folder for a multi-item checkpoint and then restore none.
      item_handlers=ocp.StandardCheckpointHandler())


def save(manager: ocp.CheckpointManager, step: int, state) -> None:
  """Saves `state` (host arrays, or global jax arrays) as checkpoint `step`, in the background.

  Orbax copies device arrays to the host before it returns, so the caller may
  donate them to the next step.
  """
  manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(manager: ocp.CheckpointManager, abstract_state, *, shardings=None,
                   move_unrestorable=True):
  """(state, its step), or (None, 0) when there is no checkpoint.

  The state comes as host numpy arrays, or, given `shardings` (a tree of
  jax.sharding.Sharding like the state's), as global arrays placed by them.

  Tries the checkpoints newest first. Those that fail are logged as warnings;
  once an older one restores, the failed newer ones are moved (by process 0,
  if `move_unrestorable`) to workdir/unrestorable_checkpoints/. If none
  restores, raises ValueError naming the folder and moves nothing: the cause
  may be the code or config rather than the files.

  abstract_state: the state's tree of jax.ShapeDtypeStruct (`jax.eval_shape`).
  """
  if shardings is None:
    # Restored onto one local device, then fetched: every process gets the values.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract_state)
    fetch = jax.device_get
  else:
    fetch = lambda state: state
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_state, shardings)
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except (orbax and TensorStore raise many types)
      reason = _first_line(e)
      logging.warning('Cannot restore the checkpoint %s (%s); trying an older one.',
                      os.path.join(manager.directory, str(step)), reason)
      failed.append((step, reason))
      continue
    if failed and move_unrestorable:
      _move_aside(manager, [s for s, _ in failed])
    return fetch(state), step
  if failed:
    raise ValueError(
        f'No checkpoint in {manager.directory} can be restored (steps '
        f'{", ".join(str(s) for s, _ in failed)}; the newest failed with {failed[0][1]}). '
        f'If the files are damaged, move that folder away to start from step 0; if the code '
        f'or config changed, run it with a new --workdir.')
  return None, 0


def restore_params(manager: ocp.CheckpointManager, target, step: int):
  """The parameters of checkpoint `step`, as host numpy arrays; the rest stays on disk.

  target: the params' tree of jax.ShapeDtypeStruct (`jax.eval_shape`).
  """
  # A partial PyTree restore of the item the StandardCheckpointHandler wrote.
  target = {'params': target}
  path = os.path.join(manager.directory, str(step), ocp.checkpoint_manager.DEFAULT_ITEM_NAME)
  restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return restored['params']


def _first_line(error):
  # Orbax and TensorStore errors can run to pages; their first line says what.
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0][:300]}' if text else type(error).__name__


def _move_aside(manager, steps):
  if jax.process_index() != 0:
    return
  root = os.path.dirname(str(manager.directory))
  for step in steps:
    source = os.path.join(manager.directory, str(step))
    dest = os.path.join(root, UNRESTORABLE_DIR, str(step))
    n = 1
    while os.path.exists(dest):
      dest = os.path.join(root, UNRESTORABLE_DIR, f'{step}.{n}')
      n += 1
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(source, dest)
    logging.warning('Moved the unrestorable checkpoint %s to %s (kept, not deleted).', source,
                    dest)
  manager.reload()  # It lists the steps once; the moved ones are gone.
