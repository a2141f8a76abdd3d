"""Context parallelism: one sequence split over the devices of a mesh axis, exact.

Call `attend_sharded` inside `jax.shard_map` with query, key, value and
key_mask sharded along the sequence (`PartitionSpec(None, axis_name)`): each
device holds a contiguous shard [b, n/P, h, *], shards in axis-index order.
Each device reduces its own keys and values to a state whose size does not
depend on n, the devices exchange the states, and each finishes its own queries:

  linear      (m, z, S): the per-feature max m, z = sum exp(k - m), S = sum exp(k - m) vᵀ.
              Non-causal: pmax of m, psum of z and S rescaled to the global max;
              out = softmax_feat(q) · S / z. Causal: all_gather of the P states and
              their exclusive online-softmax combination along the axis (the devices
              before this one), from which this device's causal kernel starts
              (`initial_state`).
  elu_linear  (z, S) = (sum phi(k), sum phi(k) vᵀ): the same with plain sums.
  linformer   E·K and F·V: each device projects its shard with the columns of E
              and F at its sequence offset; a psum gives every device the k rows,
              to which its queries attend.

Communication per layer, whatever n: O(P·b·h·d·d_v) numbers for the causal
linear kinds (the gathered states), O(b·h·d·d_v) for the non-causal ones (one
all-reduce), O(b·k·h·d) for Linformer; the backward pass moves as much again.
Kinds whose result needs every key, not a fixed-size summary of them (softmax,
window), have no context-parallel form here (no ring attention): their record's
`context_parallel` is None and `attend_sharded` refuses them.

A device whose keys are all padding contributes the empty state (m = -1e30,
z = 0, S = 0), so padding may straddle shard boundaries or fill whole shards.
"""
import jax
import jax.numpy as jnp
from jax import lax

from linformer_jax.attention import common
from linformer_jax.attention import elu_linear as _elu
from linformer_jax.attention import linear as _linear
from linformer_jax.attention import linformer as _linformer
from linformer_jax.attention.common import NEG


def _gathered_before(state, axis_name):
  """(state of every device along axis_name, stacked on axis 0 [P, ...], a [P] bool
  that is True for the devices before this one). O(P·|state|) communication."""
  gathered = jax.tree.map(lambda x: lax.all_gather(x, axis_name), state)
  size = jax.tree.leaves(gathered)[0].shape[0]
  return gathered, jnp.arange(size) < lax.axis_index(axis_name)


def _inputs(query, key, value, key_mask, precision):
  num = common.numerics(query, key, value, precision=precision)
  return num, query.astype(num.acc), key.astype(num.acc), common.mask_as(key_mask, key, num.acc)


def linear(query, key, value, *, axis_name, key_mask=None, causal=False, chunk_size=64,
           implementation=None, precision=None):
  """`linear_attention` of this device's queries to the whole sequence's keys."""
  num, q, k, mask = _inputs(query, key, value, key_mask, precision)
  m, z, s = _linear.linear_sums(num, jnp.where(mask > 0, k, NEG), mask, value)
  if causal:
    (m, z, s), before = _gathered_before((m, z, s), axis_name)
    # The online-softmax combination of the earlier devices' states: shift each by
    # the max over those devices (the empty state, if there are none).
    top = jnp.max(jnp.where(before[:, None, None, None], m, NEG), axis=0)
    scale = jnp.where(before[:, None, None, None], jnp.exp(jnp.minimum(m - top, 0.0)), 0.0)
    state = {'m': top, 'z': jnp.sum(scale * z, axis=0),
             's': jnp.sum(scale[..., None] * s, axis=0)}
    return _linear.linear_attention(query, key, value, key_mask=key_mask, causal=True,
                                    chunk_size=chunk_size, implementation=implementation,
                                    precision=precision, initial_state=state)
  top = lax.pmax(lax.stop_gradient(m), axis_name)
  scale = jnp.exp(m - top)  # <= 1; 0 for a device with no real key
  z, s = lax.psum((z * scale, s * scale[..., None]), axis_name)
  kv = s / jnp.where(z > 0, z, 1.0)[..., None]
  out = num.einsum('bhnd,bhde->bhne', common.heads_first(jax.nn.softmax(q, axis=-1)), kv)
  return common.heads_first(out).astype(query.dtype)


def elu_linear(query, key, value, *, axis_name, key_mask=None, causal=False, chunk_size=64,
               implementation=None, precision=None):
  """`elu_linear_attention` of this device's queries to the whole sequence's keys."""
  num, q, k, mask = _inputs(query, key, value, key_mask, precision)
  v = value.astype(num.acc)
  phi_k = common.heads_first(_elu.phi(k) * mask)
  z, s = jnp.sum(phi_k, axis=2), num.einsum('bhnd,bhne->bhde', phi_k, common.heads_first(v))
  if causal:
    (z, s), before = _gathered_before((z, s), axis_name)
    state = {'z': jnp.sum(jnp.where(before[:, None, None, None], z, 0.0), axis=0),
             's': jnp.sum(jnp.where(before[:, None, None, None, None], s, 0.0), axis=0)}
    return _elu.elu_linear_attention(query, key, value, key_mask=key_mask, causal=True,
                                     chunk_size=chunk_size, implementation=implementation,
                                     precision=precision, initial_state=state)
  z, s = lax.psum((z, s), axis_name)
  phi_q = common.heads_first(_elu.phi(q))
  out = num.einsum('bhnd,bhde->bhne', phi_q, s)
  den = num.einsum('bhnd,bhd->bhn', phi_q, z)[..., None]
  return common.heads_first(common.safe_div(out, den)).astype(query.dtype)


def linformer(query, key, value, *, axis_name, key_mask=None, causal=False, chunk_size=None,
              implementation=None, precision=None, projections=None):
  """`linformer_attention` of this device's queries: E·K and F·V summed over the devices."""
  del causal, chunk_size, implementation  # attend_sharded refused a causal call: no causal form
  e_proj, f_proj = projections
  n, size = key.shape[1], lax.axis_size(axis_name)
  _linformer.check_projections('attend_sharded', n * size, key.shape[2], e_proj, f_proj)
  num, _, _, mask = _inputs(query, key, value, key_mask, precision)
  # This shard's columns of E and F: those at its offset in the whole sequence.
  start = lax.axis_index(axis_name) * n
  columns = lambda p: lax.dynamic_slice_in_dim(p, start, n, axis=p.ndim - 1)
  ek, fv = lax.psum(tuple(_linformer.project(num, columns(p), x, mask)
                          for p, x in ((e_proj, key), (f_proj, value))), axis_name)
  has_key = None
  if key_mask is not None:
    has_key = lax.psum(jnp.sum(key_mask, axis=1, dtype=jnp.int32), axis_name) > 0
  return _linformer.attend_projected(num, query, ek, fv, has_key)


def attend_sharded(kind, query, key, value, *, axis_name, key_mask=None, causal=False,
                   chunk_size=64, projections=None, implementation=None, precision=None):
  """`attend(kind, ...)` on a sequence split over the devices of `axis_name`.

  Call inside `jax.shard_map` (manual over `axis_name`). query [b, n/P, h, d],
  key [b, n/P, h, d], value [b, n/P, h, d_v] and key_mask [b, n/P] are this
  device's contiguous shard of the sequence (device i holds positions
  i·n/P .. (i+1)·n/P - 1); returns this device's shard of
  `attend(kind, <whole sequence>, ...)` [b, n/P, h, d_v], exact up to rounding,
  and differentiable: gradients reach every device's keys and values (and the
  projections) through the collectives. `projections` (linformer): the whole
  (e_proj, f_proj), [k, max_len] or [heads, k, max_len], replicated; max_len
  >= n. Other arguments as for `attend`; the kinds with a context-parallel form
  are those whose record has `context_parallel` (linear, elu_linear,
  linformer). Communication per call is independent of n: O(P·b·h·d·d_v) for
  the causal linear kinds, O(b·h·d·d_v) non-causal, O(b·h·k·d) for Linformer
  (see the module docstring). Raises ValueError for a kind without a
  context-parallel form, and whatever `attend` raises for the arguments.
  """
  # Not at the top: the package imports this module to build its records.
  from linformer_jax import attention  # pylint: disable=g-import-not-at-top
  record = attention.check_call(kind, causal=causal, implementation=implementation,
                                projections=projections)
  if record.context_parallel is None:
    sharded = tuple(name for name, k in attention.TABLE.items() if k.context_parallel is not None)
    raise ValueError(
        f'{kind!r} attention has no context-parallel form: its exact result needs every key, '
        f'not a fixed-size summary of them, and ring attention is not implemented here. Use one '
        f'of {sharded}, or shard the batch instead of the sequence')
  common.check_inputs('attend_sharded', query, key, value, key_mask, causal, chunk_size)
  kwargs = {'projections': projections} if record.needs_projections else {}
  return record.context_parallel(query, key, value, axis_name=axis_name, key_mask=key_mask,
                                 causal=causal, chunk_size=chunk_size,
                                 implementation=implementation, precision=precision, **kwargs)
