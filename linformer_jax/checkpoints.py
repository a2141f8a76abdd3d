"""Orbax checkpoints of the train state in workdir/checkpoints.

The state is saved as host numpy arrays: orbax writes those from process 0
only, and every process restores the same values. A checkpoint appears under
its step's name only once it is complete, so a run killed while saving leaves
the previous one as the latest.
"""
import os

import jax
import orbax.checkpoint as ocp


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints; callers decide when to save."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(manager: ocp.CheckpointManager, step: int, state) -> None:
  """Saves `state` (a tree of host arrays) as checkpoint `step`, in the background."""
  manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """(state as host numpy arrays, its step), or (None, 0) when there is no checkpoint.

  abstract_state: the state's tree of jax.ShapeDtypeStruct (`jax.eval_shape`).
  """
  step = manager.latest_step()
  if step is None:
    return None, 0
  # Restored onto one local device, then fetched: every process gets the values.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        abstract_state)
  state = manager.restore(step, args=ocp.args.StandardRestore(target))
  return jax.device_get(state), step
