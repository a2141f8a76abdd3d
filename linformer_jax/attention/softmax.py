"""Exact softmax attention with 1/sqrt(d) scaling: O(n²·d) time.

Implementations: 'xla' forms the scores explicitly (O(n²) memory; the
reference the other kernels are compared with); 'blocked' takes the queries
in blocks of `block_size`, each against the keys under `jax.checkpoint`, so
forward and backward hold O(block_size·n) scores instead of O(n²) (the query
chunking of Rabe & Staats, arXiv:2112.05682; O(n²) time; causal, runs of
blocks skip the keys after their last query, scoring about 9/16 of the n²
pairs from 16 blocks on); 'jax' calls `jax.nn.dot_product_attention`: with
implementation='cudnn' (fused flash attention) on a GPU for bf16/fp16 inputs,
and its XLA form (n×n scores) elsewhere or where cuDNN refuses the call. The
default is 'jax' off CPU; on CPU 'xla', or 'blocked' from BLOCKED_FROM =
q_len·kv_len on.
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from linformer_jax.attention import common
from linformer_jax.attention.common import NEG

IMPLEMENTATIONS = ('xla', 'blocked', 'jax')
BLOCK_SIZE = 512                  # queries per block of 'blocked'
BLOCKED_FROM = 2048 * 2048        # q_len·kv_len from which CPU's default is 'blocked'
CAUSAL_RUNS = 8                   # causal 'blocked': runs of blocks, each scoring keys up to its end


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


def _query_blocks(num, starts, blocks, k, v, key_mask, causal):
  """_xla on each of `blocks` [count, b, block, h, d] in turn (first queries at `starts`)."""
  block = blocks.shape[2]

  @jax.checkpoint  # the backward recomputes a block's scores rather than storing them all
  def one(args):
    start, q_block = args
    allowed = _allowed(key_mask, False, block, k.shape[1])
    if causal:
      seen = jnp.arange(k.shape[1])[None, :] <= start + jnp.arange(block)[:, None]
      allowed = seen[None, None] if allowed is None else allowed & seen[None, None]
    return _xla(num, q_block, k, v, allowed)

  return lax.map(one, (starts, blocks))


def _blocked(num, q, k, v, key_mask, causal, block_size):
  """_xla on blocks of `block_size` queries (the last one padded), one at a time.

  Causal, the blocks go in CAUSAL_RUNS runs (fewer below 16 blocks), each scoring
  only the keys up to its own last query: 1/2 + 1/(2·runs) of the n² pairs when the
  runs are equal (9/16 with 8 runs), where non-causal scores all of them.
  """
  b, n, h, d = q.shape
  block = min(block_size, n)
  count = -(-n // block)
  blocks = jnp.pad(q, ((0, 0), (0, count * block - n), (0, 0), (0, 0)))
  blocks = blocks.reshape(b, count, block, h, d).swapaxes(0, 1)
  # Two blocks a run at least: XLA:CPU inlines a loop of one step, and eight such
  # runs then held their scores at once (3.4x the temporary memory at n = 4096).
  num_runs = max(1, min(CAUSAL_RUNS, count // 2)) if causal else 1
  edges = [count * i // num_runs for i in range(num_runs + 1)]
  outs = []
  for lo, hi in zip(edges, edges[1:]):
    end = min(k.shape[1], hi * block) if causal else k.shape[1]
    outs.append(_query_blocks(num, jnp.arange(lo, hi) * block, blocks[lo:hi], k[:, :end],
                              v[:, :end], None if key_mask is None else key_mask[:, :end], causal))
  out = jnp.concatenate(outs)
  return out.swapaxes(0, 1).reshape(b, count * block, h, -1)[:, :n]


def _has_keys(key_mask, causal):
  """[b, q_len or 1] bool: whether each query sees a real key (None: every query does), O(n)."""
  if key_mask is None:
    return None
  if causal:
    return lax.cummax(key_mask.astype(jnp.int32), axis=1) > 0
  return jnp.any(key_mask, axis=1, keepdims=True)


@functools.partial(jax.jit, static_argnames=('causal', 'implementation', 'precision',
                                             'block_size'))
def softmax_attention(query, key, value, *, key_mask=None, causal=False, implementation=None,
                      precision=None, block_size=BLOCK_SIZE):
  """Exact softmax attention with 1/sqrt(d) scaling: O(n²) time.

  With `causal`, query i sees keys j <= i (q_len must equal kv_len).
  `implementation`: None ('jax' off CPU; on CPU 'xla', or 'blocked' from
  BLOCKED_FROM = q_len·kv_len on), 'xla' (explicit scores, O(n²) memory),
  'blocked' (`block_size` queries at a time, O(block_size·n) memory, also in
  the backward) or 'jax' (`jax.nn.dot_product_attention`: cuDNN flash
  attention on GPU for bf16/fp16; float64 inputs take 'xla', since it computes
  in float32). A query whose keys are all masked gets zeros.
  """
  common.check_inputs('softmax_attention', query, key, value, key_mask, causal)
  common.check_implementation('softmax_attention', implementation, IMPLEMENTATIONS)
  if not common.is_positive_int(block_size):
    raise ValueError(f'softmax_attention: block_size must be a positive int; got {block_size!r}')
  empty = common.empty_output(query, key, value)
  if empty is not None:
    return empty
  num = common.numerics(query, key, value, precision=precision)
  q_len, kv_len = query.shape[1], key.shape[1]
  cpu = 'xla' if q_len * kv_len < BLOCKED_FROM else 'blocked'
  if num.acc == jnp.float64 and implementation in (None, 'jax'):
    # jax.nn.dot_product_attention computes its scores in float32 whatever the inputs.
    implementation = cpu
  impls = {'xla': lambda q, k, v: _xla(num, q, k, v, _allowed(key_mask, causal, q_len, kv_len)),
           'blocked': functools.partial(_blocked, num, key_mask=key_mask, causal=causal,
                                        block_size=block_size),
           'jax': functools.partial(common.jax_nn_attention, num, key_mask=key_mask, causal=causal)}
  out = common.by_platform(implementation, (query, key, value), impls, cpu=cpu, default='jax')
  has_keys = _has_keys(key_mask, causal)
  if has_keys is not None:
    # A row with every key masked would otherwise be a uniform average.
    out = jnp.where(has_keys[:, :, None, None], out, 0.0)
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
