"""What every kernel shares: input checks, the numerics policy, masks, chunking.

Numerics (one policy for every kernel): inputs of dtype bfloat16 or float16
make bf16/fp16 matmul *operands* with float32 accumulation
(`preferred_element_type`); maxima, exponentials, exponent sums and
normalisers are float32 always; float64 inputs compute in float64. `precision`
(a `jax.lax.Precision` or None) goes to every matmul, as in `jnp.einsum`:
None is the backend's default, which on GPU runs float32 matmuls in TF32 and on
TPU in bf16 passes; `'highest'` gives true float32 there.
"""
import math
from typing import NamedTuple


import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Finite stand-in for -inf: masked keys never produce inf - inf = NaN, forward or backward.
NEG = -1e30
# A shifted causal denominator below exp(-MAX_SHIFT) (keys spread by more than
# this many nats within a chunk) means the factorised chunk form has lost the
# result; those calls take an exact path (linear.py).
MAX_SHIFT = 40.0
TINY = math.exp(-MAX_SHIFT)


class Numerics(NamedTuple):
  """How a kernel computes: matmul operand dtype, accumulation dtype, matmul precision."""
  operand: jnp.dtype
  acc: jnp.dtype
  precision: object = None

  def einsum(self, spec, *operands):
    """jnp.einsum with operands in `operand`, accumulated and returned in `acc`."""
    return jnp.einsum(spec, *(x.astype(self.operand) for x in operands), precision=self.precision,
                      preferred_element_type=self.acc)


def numerics(*xs, precision=None, low_precision_operands=True):
  """The policy for inputs xs: bf16 (and fp16, unless `low_precision_operands`
  is False) operands stay low precision, all else computes in float32 or float64."""
  dtype = jnp.result_type(*xs)
  acc = jnp.promote_types(dtype, jnp.float32)
  low = dtype == jnp.bfloat16 or (dtype == jnp.float16 and low_precision_operands)
  return Numerics(dtype if low else acc, acc, precision)


def check_inputs(name, query, key, value, key_mask, causal=False, chunk_size=None):
  """Raises ValueError on shapes that do not fit; runs at trace time only."""
  if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
    raise ValueError(f'{name}: query, key and value must be [batch, length, heads, dim]; got shapes '
                     f'{query.shape}, {key.shape}, {value.shape}')
  b, q_len, h, d = query.shape
  if key.shape[:1] + key.shape[2:] != (b, h, d):
    raise ValueError(f'{name}: key shape {key.shape} does not match query shape {query.shape} '
                     '(batch, heads and head_dim must agree)')
  if value.shape[:3] != key.shape[:3]:
    raise ValueError(f'{name}: value shape {value.shape} does not match key shape {key.shape} '
                     '(batch, length and heads must agree)')
  if key_mask is not None and tuple(key_mask.shape) != key.shape[:2]:
    raise ValueError(f'{name}: key_mask shape {tuple(key_mask.shape)} must be [batch, kv_len] = {key.shape[:2]}')
  if causal and q_len != key.shape[1]:
    raise ValueError(f'{name}: causal attention needs q_len == kv_len, got {q_len} and {key.shape[1]}')
  if chunk_size is not None and not is_positive_int(chunk_size):
    raise ValueError(f'{name}: chunk_size must be a positive int, got {chunk_size!r}')


def check_implementation(name, implementation, valid):
  if implementation is not None and implementation not in valid:
    raise ValueError(f'{name}: unknown implementation {implementation!r}; valid: None (the best '
                     f'for the backend) or one of {valid}')


def is_positive_int(x):
  # bool is an int subclass, but chunk_size=True is a mistake, not 1.
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and x >= 1


def empty_output(query, key, value):
  """Zeros [batch, q_len, heads, d_v] when there is no query or no key, else None."""
  if query.shape[1] == 0 or key.shape[1] == 0:
    return jnp.zeros(query.shape[:3] + value.shape[-1:], query.dtype)
  return None


def heads_first(x):
  """[b, n, h, f] <-> [b, h, n, f]."""
  return x.transpose(0, 2, 1, 3)


def safe_div(x, den):
  """x / den where den > 0, else 0 (a query with no allowed key); NaN-free gradients."""
  return jnp.where(den > 0, x / jnp.where(den > 0, den, 1.0), 0.0)


def mask_as(key_mask, x, dtype=None):
  """[batch, kv_len, 1, 1] mask of real keys (all ones when no mask)."""
  dtype = dtype or x.dtype
  if key_mask is None:
    return jnp.ones(x.shape[:2] + (1, 1), dtype)
  return key_mask.astype(dtype)[:, :, None, None]


def chunk_for(chunk_size, n):
  # A chunk longer than the sequence only adds padding.
  return max(1, min(int(chunk_size), n))


# --- Chunks: [b, n, h, f] <-> [b, h, n_chunks, chunk, f] ---

def to_chunks(x, chunk_size, **pad_kwargs):
  """[b, n, h, f] -> [b, h, n_chunks, chunk, f], padding n up to a multiple (zeros by default)."""
  b, n, h, f = x.shape
  pad = -n % chunk_size
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)), **pad_kwargs)
  return x.reshape(b, (n + pad) // chunk_size, chunk_size, h, f).transpose(0, 3, 1, 2, 4)


def from_chunks(x, n):
  """[b, h, n_chunks, chunk, f] -> [b, n, h, f]."""
  b, h, c, size, f = x.shape
  return x.transpose(0, 2, 3, 1, 4).reshape(b, c * size, h, f)[:, :n]


def tril(size):
  return jnp.tril(jnp.ones((size, size), bool))


def intra_chunk(num, a, b, v):
  """sum_{j <= i within the chunk} (a_i · b_j) v_j: [.., C, d] x [.., C, d] x [.., C, e] -> [.., C, e]."""
  scores = num.einsum('...id,...jd->...ij', a, b)
  scores = jnp.where(tril(a.shape[-2]), scores, 0.0)
  return num.einsum('...ij,...je->...ie', scores, v)


def exclusive(x, init, axis):
  """The inclusive prefix results x shifted by one along `axis`, `init` first."""
  first = jnp.broadcast_to(jnp.asarray(init, x.dtype), x.shape[:axis] + (1,) + x.shape[axis + 1:])
  return jnp.concatenate([first, lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)], axis=axis)


def scan_chunks(body, init, *chunks):
  """lax.scan of body(carry, per-chunk inputs) over the chunk axis (2) of
  [b, h, N, C, f] inputs; returns the outputs stacked back on axis 2. The body
  is rematerialised: the backward pass keeps only each chunk's inputs and carry."""
  xs = tuple(jnp.moveaxis(x, 2, 0) for x in chunks)
  _, out = lax.scan(jax.checkpoint(body), init, xs)
  return jnp.moveaxis(out, 0, 2)


def precision_name(precision):
  """`precision` as `jax.default_matmul_precision` takes it (for kernels that call jax.nn)."""
  if precision is None:
    return None
  if isinstance(precision, lax.Precision):
    return {lax.Precision.DEFAULT: 'bfloat16', lax.Precision.HIGH: 'tensorfloat32',
            lax.Precision.HIGHEST: 'float32'}[precision]
  return precision


def by_platform(implementation, operands, implementations, cpu, default):
  """Runs implementations[implementation](*operands); None picks `cpu` on CPU
  and `default` elsewhere at lowering time (only that branch is compiled)."""
  if implementation is not None:
    return implementations[implementation](*operands)
  return lax.platform_dependent(*operands, cpu=implementations[cpu],
                                default=implementations[default])


def jax_nn_attention(num, q, k, v, key_mask=None, causal=False, local_window_size=None):
  """jax.nn.dot_product_attention on [b, n, h, *] inputs, returned in num.acc.

  cuDNN's fused flash attention (implementation='cudnn') on a GPU for bf16/fp16
  inputs; its XLA form (n×n scores and masks) elsewhere, or where cuDNN refuses
  the call (a shape, mask or window it does not support). jax.nn's own default
  is the XLA form on every backend. q, k and v must share a head dim there:
  zero features added to q and k change no score, those added to v are cut off.
  """
  d, e = q.shape[-1], v.shape[-1]
  pad = lambda x: jnp.pad(x, ((0, 0),) * 3 + ((0, max(d, e) - x.shape[-1]),)).astype(num.operand)
  args = (pad(q), pad(k), pad(v))
  kwargs = dict(mask=None if key_mask is None else key_mask[:, None, None, :], is_causal=causal,
                scale=1 / math.sqrt(d), local_window_size=local_window_size)
  with jax.default_matmul_precision(precision_name(num.precision)):
    out = None
    if jax.default_backend() == 'gpu' and num.operand in (jnp.bfloat16, jnp.float16):
      try:
        out = jax.nn.dot_product_attention(*args, implementation='cudnn', **kwargs)
      except (ValueError, NotImplementedError, RuntimeError):
        out = None
    if out is None:
      out = jax.nn.dot_product_attention(*args, implementation='xla', **kwargs)
  return out[..., :e].astype(num.acc)
