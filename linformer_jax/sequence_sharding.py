"""The layers' kernels on a sequence split over the ambient mesh's axis 'sequence'.

`attend` and `depthwise_conv` are what `layers` and `nnx` call in place of
`attention.attend` and `conv.depthwise_conv`. With no ambient mesh (no
`jax.set_mesh`), or one whose axis 'sequence' has size 1, they are exactly
those functions. Under a mesh with 'sequence' of size P > 1 (traced inside
`jax.jit` under `jax.set_mesh(mesh)`), each device holds a contiguous n/P
tokens of every sequence, and:

  attention    for the kinds with a context-parallel form (linear, elu_linear,
               linformer; `Kind.context_parallel`), the kernel runs in
               `jax.shard_map` over the mesh as `attention.attend_sharded`:
               q, k, v and key_mask are split P(batch_axes, 'sequence'), the
               devices exchange a state whose size does not depend on n
               (context_parallel.py). Kinds without one (softmax, window) are
               left to XLA on the whole arrays: its partitioner gathers keys
               and values, O(n) communication and O(n) keys per device; the
               result is the same, the scaling is not.
  convolution  a one-axis (sequence) convolution runs in `jax.shard_map`: each
               device receives the low-padding tokens before its shard from its
               left neighbour and the high-padding tokens after it from its
               right neighbour (`lax.ppermute`; zeros at the ends, as the
               unsharded zero padding), O(b·w·e) communication. Each shard must
               hold at least max(low, high) tokens. Two-axis (image grid)
               convolutions are left to XLA.

batch_axes are the mesh's 'data' and 'fsdp' axes (those it has) when they
divide the batch, else none (the batch is then replicated: correct, but each
device computes every row). n must be a multiple of P: ValueError otherwise.
Decoding (prefill, decode steps, generate) is single-device: run it outside
any mesh with 'sequence' > 1.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from linformer_jax import attention as kernels
from linformer_jax import conv as conv_lib

SEQUENCE = 'sequence'        # the mesh axis that splits the tokens
BATCH_AXES = ('data', 'fsdp')  # the mesh axes that split the batch, where the mesh has them


def sequence_mesh():
  """The ambient (abstract) mesh when its axis 'sequence' has size > 1, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.shape.get(SEQUENCE, 1) == 1:
    return None
  return mesh


def _spec(mesh, x, what):
  """P(batch_axes, 'sequence') for x [batch, n, ...], after checking n divides."""
  size = mesh.shape[SEQUENCE]
  if x.shape[1] % size:
    raise ValueError(f'{what}: sequence length {x.shape[1]} is not a multiple of the mesh axis '
                     f"'{SEQUENCE}' (size {size}); pad the sequence to a multiple of {size}, or "
                     f"run on a mesh whose '{SEQUENCE}' axis divides it")
  batch = tuple(a for a in BATCH_AXES if a in mesh.shape)
  if batch and x.shape[0] % int(np.prod([mesh.shape[a] for a in batch])):
    batch = ()
  return P(batch or None, SEQUENCE)


def attend(kind, query, key, value, *, key_mask=None, causal=False, chunk_size=64,
           projections=None, implementation=None, precision=None, window=None, gate=None):
  """`attention.attend` (same arguments, shapes and result), split over the
  ambient mesh's 'sequence' axis where it has size > 1 and the kind has a
  context-parallel form (see the module docstring); otherwise `attention.attend`
  itself (softmax and window under such a mesh: XLA gathers, O(n) communication)."""
  mesh = sequence_mesh()
  # A window (for the windowed kinds, none of which is sharded): attend's own check.
  if mesh is None or kernels.get(kind).context_parallel is None or window is not None:
    return kernels.attend(kind, query, key, value, key_mask=key_mask, causal=causal,
                          chunk_size=chunk_size, projections=projections,
                          implementation=implementation, precision=precision, window=window,
                          gate=gate)
  spec = _spec(mesh, query, f'{kind!r} attention')
  sharded = [query, key, value] + ([] if key_mask is None else [key_mask])

  def local(projections, q, k, v, mask=None):
    return kernels.attend_sharded(kind, q, k, v, axis_name=SEQUENCE, key_mask=mask, causal=causal,
                                  chunk_size=chunk_size, projections=projections,
                                  implementation=implementation, precision=precision)
  # projections (E, F; or None) replicated: every device takes the columns at its offset.
  return jax.shard_map(local, mesh=mesh, in_specs=(P(),) + (spec,) * len(sharded),
                       out_specs=spec)(projections, *sharded)


def depthwise_conv(x, kernel, padding):
  """`conv.depthwise_conv` (same arguments and result); a one-axis convolution
  under a mesh with 'sequence' > 1 exchanges its boundary tokens between
  neighbouring devices (see the module docstring)."""
  mesh = sequence_mesh()
  if mesh is None or x.ndim != 3:
    return conv_lib.depthwise_conv(x, kernel, padding)
  ((low, high),) = conv_lib.check_args(x, kernel, padding)
  spec = _spec(mesh, x, 'the local mixing convolution')
  if max(low, high) > x.shape[1] // mesh.shape[SEQUENCE]:
    raise ValueError(f'the local mixing convolution pads ({low}, {high}) tokens but each of the '
                     f"{mesh.shape[SEQUENCE]} devices of the mesh axis '{SEQUENCE}' holds only "
                     f'{x.shape[1] // mesh.shape[SEQUENCE]} of the {x.shape[1]}; use a longer '
                     'sequence, a narrower convolution or fewer sequence devices')
  axes = tuple(a for part in spec if part for a in ((part,) if isinstance(part, str) else part))
  return jax.shard_map(functools.partial(_halo_conv, padding=(low, high), axes=axes), mesh=mesh,
                       in_specs=(spec, P()), out_specs=spec)(x, kernel)


def _halo_conv(x, kernel, *, padding, axes):
  """This device's shard of the convolution: its shard with the `low` tokens
  before it and the `high` after it (zeros past the ends), unpadded. axes: the
  mesh axes x is split over."""
  low, high = padding
  size = lax.axis_size(SEQUENCE)
  parts = [x]
  if low:  # device i's last `low` tokens go to device i + 1; device 0 receives zeros
    parts.insert(0, lax.ppermute(x[:, x.shape[1] - low:], SEQUENCE,
                                 [(i, i + 1) for i in range(size - 1)]))
  if high:  # device i's first `high` tokens go to device i - 1; the last receives zeros
    parts.append(lax.ppermute(x[:, :high], SEQUENCE, [(i + 1, i) for i in range(size - 1)]))
  # The kernel is replicated, and conv's hand-written gradient gives each device its
  # share of dkernel: cast to varying like x, whose transpose sums the shares.
  kernel = lax.pcast(kernel, axes, to='varying')
  return conv_lib.depthwise_conv(jnp.concatenate(parts, axis=1), kernel, ((0, 0),))
