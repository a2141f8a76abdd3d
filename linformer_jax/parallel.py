"""The pmap path (config.parallelism = 'pmap') and the device and multi-host helpers.

Each process feeds its own rows of the global batch, split over its local
devices; the step functions combine gradients and metric sums over `AXIS`, which
spans all devices of all processes. The jit-over-a-Mesh path is mesh.py; both
offer the trainer the same methods (`PmapPath`, `mesh.MeshPath`).
"""
import functools
import os

import jax
import numpy as np

AXIS = 'batch'


def initialize_distributed():
  """Joins a multi-process run; call before anything else touches JAX devices.

  `jax.distributed.initialize()` detects SLURM, Open MPI, Kubernetes and Cloud
  TPU by itself. Anywhere else (several processes on one machine, say) set
  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID in each process's environment.
  """
  if jax.distributed.is_initialized():  # A second run in the same process.
    return
  kwargs = {}
  for name, env in (('num_processes', 'JAX_NUM_PROCESSES'), ('process_id', 'JAX_PROCESS_ID')):
    if env in os.environ:
      kwargs[name] = int(os.environ[env])
  jax.distributed.initialize(**kwargs)


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def local_devices(num_devices: int | None = None) -> list:
  """The first `num_devices` local devices (None: all of them).

  Fewer than all is for single-process runs (tests comparing 1 to 8 devices):
  a multi-process pmap must span every device of every process.
  """
  devices = jax.local_devices()
  if num_devices is None:
    return devices
  if not 1 <= num_devices <= len(devices):
    raise ValueError(f'num_devices={num_devices} must be in [1, {len(devices)}], '
                     'the local devices')
  if num_devices < len(devices) and jax.process_count() > 1:
    raise ValueError(f'num_devices={num_devices}: a multi-process run uses all local devices')
  return devices[:num_devices]


def check_batch_size(batch_size: int, devices) -> None:
  """Raises unless the global batch splits evenly over all devices of all processes."""
  total = len(devices) * jax.process_count()
  if batch_size % total:
    raise ValueError(
        f'global batch_size={batch_size} is not divisible by the number of devices {total} '
        f'({len(devices)} local x {jax.process_count()} processes); use a multiple of {total}')


def _pmap_sharding(devices):
  return jax.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)), jax.P(AXIS))


def replicate(tree, devices):
  """Copies every leaf to each device: [...] -> [len(devices), ...] on `devices`."""
  sharding = _pmap_sharding(devices)
  return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * len(devices)), sharding),
                      tree)


def unreplicate(tree):
  """The first device's copy of a replicated tree, as host numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)


def shard(batch, devices):
  """Splits this process's batch over its devices.

  Every leaf [b, ...] becomes [len(devices), b / len(devices), ...].
  """
  n = len(devices)
  sharding = _pmap_sharding(devices)
  return jax.tree.map(lambda x: jax.device_put(x.reshape((n, -1) + x.shape[1:]), sharding), batch)


def _per_device_train_step(train_step, state, batch, rng):
  # Each device draws its own dropout masks from the one run key.
  rng = jax.random.fold_in(rng, jax.lax.axis_index(AXIS))
  return train_step(state, batch, rng, axis_name=AXIS)


def pmap_train_step(train_step, devices):
  """`train_step(state, batch, rng, *, axis_name)` over `devices`; donates the state.

  Inputs and outputs carry a leading device axis (`replicate`, `shard`); `rng`
  is the replicated run key, folded with each device's index.
  """
  return jax.pmap(functools.partial(_per_device_train_step, train_step), axis_name=AXIS,
                  devices=_pmap_devices(devices), donate_argnums=(0,))


def pmap_eval_step(eval_step, devices):
  """`eval_step(params, batch, *, axis_name)` over `devices`."""
  return jax.pmap(functools.partial(eval_step, axis_name=AXIS), axis_name=AXIS,
                  devices=_pmap_devices(devices))


def _pmap_devices(devices):
  # pmap's `devices` must list every process's devices; None means all of them.
  return None if list(devices) == jax.local_devices() else devices


class PmapPath:
  """config.parallelism = 'pmap': what the trainer asks of a parallel layout.

  mesh.MeshPath has the same methods. Trees on the device carry a leading
  device axis; checkpoints hold the unreplicated state as host arrays.
  """

  def __init__(self, devices):
    self.devices = devices
    self.num_devices = len(devices) * jax.process_count()

  def restore_shardings(self):
    return None  # Onto one device, then fetched (checkpoints.restore_latest).

  def init_state(self, init, rng):
    """`init(rng)` (the train state) as host arrays, computed on the default device."""
    return jax.device_get(jax.jit(init)(rng))

  def place_state(self, state):
    return replicate(state, self.devices)

  def place_batch(self, batch):
    return shard(batch, self.devices)

  def place_rng(self, key):
    return replicate(key, self.devices)

  def train_step(self, train_step):
    return pmap_train_step(train_step, self.devices)

  def eval_step(self, eval_step):
    return pmap_eval_step(eval_step, self.devices)

  def fetch(self, tree):
    return unreplicate(tree)

  def checkpointable(self, state):
    return unreplicate(state)
