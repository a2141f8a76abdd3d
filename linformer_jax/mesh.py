"""Training over a `jax.sharding.Mesh` (config.parallelism = 'mesh'): `jax.jit`, not pmap.

The mesh has the axes ('data', 'fsdp', 'sequence'), sized by config.mesh, e.g.
'data:-1,fsdp:2,sequence:1' (-1: the devices the other axes leave).

- Batch: every leaf's rows are split over ('data', 'fsdp'); token arrays
  (rank >= 2, dimension 1 the input length) also split their positions over
  'sequence'. Each process feeds its own rows, as on the pmap path.
- Parameters and optimizer state (FSDP): each array is split over 'fsdp' along
  its largest axis whose size the fsdp size divides (the earliest such axis on a
  tie), and replicated where no axis divides (`fsdp_spec`).
- The step: the same pure `trainer.train_step` / `eval_step` as pmap, with
  axis_name=None. Under jit they see global arrays, so their sums are global
  sums and the loss (summed cross-entropy / summed weights) is that of one
  device holding the whole batch; XLA inserts the collectives. train_step also
  gets `param_shardings`: each parameter is gathered whole before the forward
  pass and each gradient constrained to its shard (without it XLA split the
  computation around the shards: 162 collectives a step against 99 for
  configs/mlm.py on fsdp:8, and 1.66x pmap's time per token against 0.86x,
  benchmarks/mesh_vs_pmap.py on 8 fake CPU devices). The step runs
  inside `jax.set_mesh(mesh)`, so model code can find the ambient mesh
  (`jax.sharding.get_abstract_mesh()`).
- Dropout: the key is folded with the step only (train_step does that), never
  with a device index, and `jax_threefry_partitionable` (on by default in JAX
  0.10.2; MeshPath sets it all the same) makes the bits of a global array
  independent of how it is split. So
  every mesh layout, one device included, draws the same masks. The pmap path
  keeps its per-device fold-in: pmap and mesh dropout masks differ, and pmap's
  change with the device count.
"""
import functools
import math

import jax
import numpy as np
from jax.experimental import multihost_utils

AXES = ('data', 'fsdp', 'sequence')
BATCH_AXES = ('data', 'fsdp')
_EXAMPLE = "'data:-1,fsdp:1,sequence:1'"


def parse_mesh(spec: str, num_devices: int) -> dict[str, int]:
  """{'data': d, 'fsdp': f, 'sequence': s} from config.mesh over `num_devices` devices.

  Axes not named have size 1; one axis may be -1 (the devices the others
  leave). Raises ValueError naming the bad value and what is valid.
  """
  def fail(why):
    raise ValueError(f'config.mesh={spec!r}: {why}. Valid: comma-separated axis:size with '
                     f'axes {list(AXES)}, sizes >= 1 or one -1 for the rest, their product '
                     f'the number of devices ({num_devices}), e.g. {_EXAMPLE}')
  sizes = {}
  for item in str(spec).split(','):
    name, _, size = (s.strip() for s in item.partition(':'))
    if name not in AXES:
      fail(f'unknown axis {name!r}')
    if name in sizes:
      fail(f'axis {name!r} given twice')
    try:
      sizes[name] = int(size)
    except ValueError:
      fail(f'size {size!r} of axis {name!r} is not an integer')
    if sizes[name] != -1 and sizes[name] < 1:
      fail(f'size {sizes[name]} of axis {name!r} is neither >= 1 nor -1')
  rest = [name for name, size in sizes.items() if size == -1]
  if len(rest) > 1:
    fail(f'more than one -1 ({", ".join(rest)})')
  known = math.prod(size for size in sizes.values() if size != -1)
  if rest:
    if num_devices % known:
      fail(f'the sizes given ({known} devices) do not divide the {num_devices} devices')
    sizes[rest[0]] = num_devices // known
  elif known != num_devices:
    fail(f'the sizes multiply to {known} devices, not the {num_devices} there are')
  return {name: sizes.get(name, 1) for name in AXES}


def create_mesh(spec: str, devices) -> jax.sharding.Mesh:
  """The Mesh of config.mesh over `devices` (all processes' devices, in jax.devices() order).

  `jax.make_mesh` orders them for the hardware's topology; every axis is Auto
  (GSPMD propagates the shardings set on the inputs and the state).
  """
  sizes = parse_mesh(spec, len(devices))
  return jax.make_mesh(tuple(sizes[a] for a in AXES), AXES, devices=list(devices),
                       axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def check_batch(mesh_shape, batch_size: int, input_len: int, process_count: int = 1) -> None:
  """Raises ValueError unless the batch and input length split over the mesh axes."""
  rows = mesh_shape['data'] * mesh_shape['fsdp']
  shape = ','.join(f'{a}:{mesh_shape[a]}' for a in AXES)
  if batch_size % rows:
    raise ValueError(
        f'global batch_size={batch_size} is not divisible by the mesh axes data x fsdp = '
        f'{rows} (mesh {shape}) that split the rows; use a multiple of {rows}')
  if batch_size % process_count:
    raise ValueError(f'global batch_size={batch_size} is not divisible by the {process_count} '
                     'processes that feed it')
  if input_len % mesh_shape['sequence']:
    raise ValueError(
        f'the input length {input_len} (seq_len) is not divisible by the mesh axis sequence = '
        f'{mesh_shape["sequence"]} (mesh {shape}) that splits the positions')


def fsdp_spec(shape, fsdp: int) -> jax.P:
  """PartitionSpec of one parameter or optimizer-state array of `shape`.

  Split over 'fsdp' along the largest axis whose size `fsdp` divides (the
  earliest of equal ones); replicated if none does, or fsdp == 1.
  """
  axes = [i for i, d in enumerate(shape) if d % fsdp == 0] if fsdp > 1 else []
  if not axes:
    return jax.P()
  axis = max(axes, key=lambda i: (shape[i], -i))
  return jax.P(*(('fsdp' if i == axis else None) for i in range(len(shape))))


def state_shardings(abstract_state, mesh):
  """NamedShardings of a state tree (arrays or ShapeDtypeStructs) by `fsdp_spec`."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(lambda x: jax.NamedSharding(mesh, fsdp_spec(x.shape, fsdp)),
                      abstract_state)


def batch_spec(shape, input_len: int) -> jax.P:
  """Rows over ('data', 'fsdp'); positions too over 'sequence' for token arrays."""
  if len(shape) >= 2 and shape[1] == input_len:
    return jax.P(BATCH_AXES, 'sequence')
  return jax.P(BATCH_AXES)


class MeshPath:
  """The mesh counterpart of parallel.PmapPath: placement, the jitted steps, fetching."""

  def __init__(self, mesh, input_len: int, abstract_state):
    """input_len: the inputs' dimension 1; abstract_state: the train state's ShapeDtypeStructs."""
    jax.config.update('jax_threefry_partitionable', True)  # The default; dropout relies on it.
    self.mesh, self.input_len = mesh, input_len
    self.num_devices = mesh.size
    self._replicated = jax.NamedSharding(mesh, jax.P())
    self._state_shardings = state_shardings(abstract_state, mesh)

  def context(self):
    return jax.set_mesh(self.mesh)

  def restore_shardings(self):
    """Where a checkpoint is restored to: straight onto the mesh, by `fsdp_spec`."""
    return self._state_shardings

  def init_state(self, init, rng):
    """`init(rng)` (the train state) computed straight into its shardings.

    No device holds the whole state; the values are those of one device
    (jax_threefry_partitionable).
    """
    with self.context():
      return jax.jit(init, out_shardings=self._state_shardings)(rng)

  def place_state(self, state):
    """A state (host arrays, or already on the mesh) -> sharded by `fsdp_spec`."""
    return jax.device_put(state, self._state_shardings)

  def place_batch(self, batch):
    """This process's rows [b / processes, ...] -> global arrays [b, ...] on the mesh."""
    processes = jax.process_count()

    def put(x):
      sharding = jax.NamedSharding(self.mesh, batch_spec(x.shape, self.input_len))
      return jax.make_array_from_process_local_data(
          sharding, x, (x.shape[0] * processes,) + x.shape[1:])
    return jax.tree.map(put, batch)

  def place_rng(self, key):
    return jax.device_put(key, self._replicated)

  def train_step(self, train_step):
    """jit of `train_step(state, batch, rng)` keeping the state's shardings; donates it."""
    jitted = jax.jit(functools.partial(train_step, param_shardings=self._state_shardings.params),
                     donate_argnums=(0,), out_shardings=(self._state_shardings, self._replicated))

    def step(state, batch, rng):
      with self.context():
        return jitted(state, batch, rng)
    return step

  def eval_step(self, eval_step):
    jitted = jax.jit(eval_step, out_shardings=self._replicated)

    def step(params, batch):
      with self.context():
        return jitted(params, batch)
    return step

  def fetch(self, tree):
    """Host numpy copies of global arrays (gathered across processes if need be)."""
    if all(x.is_fully_addressable or x.is_fully_replicated for x in jax.tree.leaves(tree)):
      return jax.tree.map(np.asarray, tree)
    return multihost_utils.process_allgather(tree, tiled=True)

  def checkpointable(self, state):
    return state  # Orbax writes each process's shards.

