"""Exact softmax attention with 1/sqrt(d) scaling: O(n²·d) time.

Implementations: 'xla' forms the scores explicitly (O(n²) memory; the
reference the other kernels are compared with; CPU's default) and 'jax' calls
`jax.nn.dot_product_attention`: with implementation='cudnn' (fused flash
attention) on a GPU for bf16/fp16 inputs, and its XLA form (n×n scores)
elsewhere or where cuDNN refuses the call. The default off CPU.
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from linformer_jax.attention import common
from linformer_jax.attention.common import NEG

IMPLEMENTATIONS = ('xla', 'jax')


def _allowed(key_mask, causal, q_len, kv_len):
  """[b or 1, 1, q_len or 1, kv_len] bool, or None when everything is allowed."""
  allowed = None
  if key_mask is not None:
    allowed = key_mask[:, None, None, :]
  if causal:
    tril = jnp.tril(jnp.ones((q_len, kv_len), bool))[None, None]
    allowed = tril if allowed is None else allowed & tril
  return allowed


def _xla(num, q, k, v, allowed):
  scores = num.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(q.shape[-1])
  if allowed is not None:
    scores = jnp.where(allowed, scores, NEG)
  weights = jax.nn.softmax(scores, axis=-1)
  return num.einsum('bhqk,bkhd->bqhd', weights, v)


@functools.partial(jax.jit, static_argnames=('causal', 'implementation', 'precision'))
def softmax_attention(query, key, value, *, key_mask=None, causal=False, implementation=None,
                      precision=None):
  """Exact softmax attention with 1/sqrt(d) scaling: O(n²) time.

  With `causal`, query i sees keys j <= i (q_len must equal kv_len).
  `implementation`: None ('xla' on CPU, 'jax' elsewhere), 'xla' (explicit
  scores, O(n²) memory) or 'jax' (`jax.nn.dot_product_attention`: cuDNN flash
  attention on GPU for bf16/fp16; float64 inputs take 'xla', since it computes
  in float32). A query whose keys are all masked gets zeros.
  """
  common.check_inputs('softmax_attention', query, key, value, key_mask, causal)
  common.check_implementation('softmax_attention', implementation, IMPLEMENTATIONS)
  empty = common.empty_output(query, key, value)
  if empty is not None:
    return empty
  num = common.numerics(query, key, value, precision=precision)
  allowed = _allowed(key_mask, causal, query.shape[1], key.shape[1])
  if num.acc == jnp.float64:
    # jax.nn.dot_product_attention computes its scores in float32 whatever the inputs.
    implementation = 'xla'
  impls = {'xla': functools.partial(_xla, num, allowed=allowed),
           'jax': functools.partial(common.jax_nn_attention, num, key_mask=key_mask, causal=causal)}
  out = common.by_platform(implementation, (query, key, value), impls, cpu='xla', default='jax')
  if allowed is not None:
    # A row with every key masked would otherwise be a uniform average.
    out = jnp.where(jnp.any(allowed, axis=-1)[..., None].transpose(0, 2, 1, 3), out, 0.0)
  return out.astype(query.dtype)


# --- Recurrent decoding: a KV cache ---

def decode_init(batch, heads, head_dim, value_dim, *, dtype, max_len=None):
  """A KV cache of `max_len` slots (required), each slot's real-key mask and
  the number of tokens so far: O(max_len·d) memory."""
  if max_len is None or not common.is_positive_int(max_len):
    raise ValueError(f"decode_init('softmax') needs max_len, a positive int (the KV cache's "
                     f'slots); got {max_len!r}')
  b, h = batch, heads
  return {'key': jnp.zeros((b, max_len, h, head_dim), dtype),
          'value': jnp.zeros((b, max_len, h, value_dim), dtype),
          'mask': jnp.zeros((b, max_len), bool), 'length': jnp.zeros((), jnp.int32)}


def decode_step(state, q, k, v, w, *, precision=None):
  """One token: O(max_len·d). Past max_len tokens the outputs are NaN."""
  pos = state['length']
  real = w[:, 0, 0] > 0
  state = {'key': lax.dynamic_update_slice_in_dim(state['key'], k[:, None], pos, axis=1),
           'value': lax.dynamic_update_slice_in_dim(state['value'], v[:, None], pos, axis=1),
           'mask': lax.dynamic_update_slice_in_dim(state['mask'], real[:, None], pos, axis=1),
           'length': pos + 1}
  scores = jnp.einsum('bhd,blhd->bhl', q, state['key'], precision=precision) / math.sqrt(q.shape[-1])
  allowed = state['mask'][:, None, :]
  weights = jax.nn.softmax(jnp.where(allowed, scores, NEG), axis=-1)
  weights = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), weights, 0.0)
  out = jnp.einsum('bhl,blhe->bhe', weights, state['value'], precision=precision)
  # The cache is full: the write above was clamped onto the last slot.
  out = jnp.where(pos < state['key'].shape[1], out, jnp.nan)
  return out, state


def prefill(k, v, mask, *, max_len=None, precision=None):
  """The cache holding k, v [b, n, h, *] (mask [b, n, 1, 1]); max_len >= n, default n."""
  del precision
  b, n, h, d = k.shape
  max_len = n if max_len is None else max_len
  if not common.is_positive_int(max_len) or max_len < n:
    raise ValueError(f'causal_state: max_len must be an int >= n = {n}, got {max_len!r}')
  state = decode_init(b, h, d, v.shape[-1], max_len=max_len, dtype=k.dtype)
  return {'key': state['key'].at[:, :n].set(k), 'value': state['value'].at[:, :n].set(v),
          'mask': state['mask'].at[:, :n].set(mask[:, :, 0, 0] > 0),
          'length': jnp.asarray(n, jnp.int32)}


# Matmul FLOPs of one forward call (2 per multiply-add), as benchmarks count them.
FLOP_FORMULA = {False: '4·b·h·n²·d  (Q·Kᵀ and P·V)',
                True: '2·b·h·n²·d  (the causal half; the explicit form computes all n²)'}


def flops(b, n, h, d, *, causal=False, **_):
  return (2 if causal else 4) * b * h * n * n * d
