"""Sliding-window softmax attention: exact softmax over the keys near each query.

With `causal`, query i sees keys i - window < j <= i (itself and the window - 1
before it); otherwise |i - j| < window (window - 1 on each side). Scores are
scaled by 1/sqrt(d). Cost O(n·window·d) with the 'blocked' implementation.

Implementations: 'blocked' splits the sequence into blocks of `window` (or n)
positions; each block's queries attend to their own block and the previous one
(and the next one when bidirectional) under a [window, 2·window] (or
[window, 3·window]) band mask: O(n·window) memory, no n×n array (CPU's
default). 'jax' calls `jax.nn.dot_product_attention(..., local_window_size=)`
(the default off CPU); its XLA form, which jax.nn's own `implementation=None`
picks on every backend (JAX 0.10), builds an n×n mask and n×n scores.

Recurrent decoding keeps a ring buffer of the last `window` keys and values:
O(window·d) state whatever the length. The window size is part of that state's
shape: `decode_init` and `prefill` take `window=`, `decode_step` reads it from
the state.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from linformer_jax.attention import common
from linformer_jax.attention.common import NEG

IMPLEMENTATIONS = ('blocked', 'jax')
DEFAULT_WINDOW = 64


def check_window(name, window):
  if not common.is_positive_int(window):
    raise ValueError(f'{name}: window must be a positive int (keys within window - 1 positions '
                     f'of the query), got {window!r}')


def _band(size, window, causal):
  """[size, 2·size or 3·size] bool: may query a of a block see key t of [previous, own(, next)]."""
  a = np.arange(size)[:, None]
  t = np.arange((2 if causal else 3) * size)[None, :]
  offset = size + a - t  # query position minus key position
  return jnp.asarray((offset >= 0) & (offset < window) if causal else np.abs(offset) < window)


def _neighbours(x, causal):
  """[b, h, N, C, f] -> [b, h, N, 2C or 3C, f]: each block's previous, own (and next) block,
  zeros beyond the ends."""
  pad = lambda before, after: jnp.pad(x, ((0, 0),) * 2 + ((before, after),) + ((0, 0),) * 2)
  previous = pad(1, 0)[:, :, :-1]
  parts = [previous, x] if causal else [previous, x, pad(0, 1)[:, :, 1:]]
  return jnp.concatenate(parts, axis=3)


def _blocked(num, q, k, v, real, *, window, causal):
  n = q.shape[1]
  size = min(window, n)  # a block longer than the sequence only adds padding
  qc, kc, vc, rc = (common.to_chunks(x, size) for x in (q, k, v, real))
  kc, vc, rc = (_neighbours(x, causal) for x in (kc, vc, rc))
  # [b, 1, N, 1, keys]: real keys (padding beyond n has real = 0) inside the band.
  allowed = _band(size, window, causal) & (jnp.swapaxes(rc, -1, -2) > 0)
  scores = num.einsum('bhncd,bhnkd->bhnck', qc, kc) / math.sqrt(q.shape[-1])
  weights = jax.nn.softmax(jnp.where(allowed, scores, NEG), axis=-1)
  return common.from_chunks(num.einsum('bhnck,bhnke->bhnce', weights, vc), n)


def _jax_nn(num, q, k, v, real, *, window, causal):
  # jax.nn allows key j for query i when i - left <= j <= i + right.
  left = window - 1
  return common.jax_nn_attention(num, q, k, v, real[:, :, 0, 0] > 0, causal,
                                 local_window_size=(left, 0 if causal else left))


def _has_key(real, window, causal):
  """[b, n, 1, 1] bool: does query i have a real key in its window (O(n) prefix counts)."""
  n = real.shape[1]
  counts = jnp.concatenate([jnp.zeros_like(real[:, :1]), jnp.cumsum(real, axis=1)], axis=1)
  i = np.arange(n)
  last = i + 1 if causal else np.minimum(i + window, n)  # one past the last allowed key
  first = np.maximum(i - window + 1, 0)
  return counts[:, last] - counts[:, first] > 0


@functools.partial(jax.jit, static_argnames=('causal', 'window', 'implementation', 'precision'))
def window_attention(query, key, value, *, key_mask=None, causal=False, window=DEFAULT_WINDOW,
                     implementation=None, precision=None):
  """Exact softmax attention over a sliding window of keys, 1/sqrt(d) scaling.

  query, key [batch, n, heads, d], value [batch, n, heads, d_v] -> [batch, n,
  heads, d_v] in the query's dtype (q_len must equal kv_len: the window is
  over positions). With `causal`, query i sees keys i - window < j <= i;
  otherwise |i - j| < window. `window` >= n is full softmax attention. Keys
  with key_mask False are excluded; a query with no allowed key gets zeros.
  `implementation`: None ('blocked' on CPU, 'jax' elsewhere), 'blocked'
  (O(n·window·d) time and memory, no n×n array) or 'jax'
  (`jax.nn.dot_product_attention` with local_window_size = (window - 1, 0)
  causal, (window - 1, window - 1) otherwise; its XLA form, which it runs
  whenever not asked for cuDNN, builds an n×n mask and scores: O(n²) memory).
  float64 inputs take 'blocked' (jax.nn computes in float32).
  """
  common.check_inputs('window_attention', query, key, value, key_mask)
  common.check_implementation('window_attention', implementation, IMPLEMENTATIONS)
  check_window('window_attention', window)
  empty = common.empty_output(query, key, value)
  if empty is not None:  # as every kernel: no query or no key gives zeros, whatever the lengths
    return empty
  if query.shape[1] != key.shape[1]:
    raise ValueError(f'window_attention: the window is over positions, so q_len must equal kv_len; '
                     f'got {query.shape[1]} and {key.shape[1]}')
  num = common.numerics(query, key, value, precision=precision)
  real = common.mask_as(key_mask, key, num.acc)
  if num.acc == jnp.float64:
    implementation = 'blocked'
  impls = {name: functools.partial(fn, num, real=real, window=window, causal=causal)
           for name, fn in (('blocked', _blocked), ('jax', _jax_nn))}
  out = common.by_platform(implementation, (query, key, value), impls, cpu='blocked',
                           default='jax')
  out = jnp.where(_has_key(real, window, causal), out, 0.0)
  return out.astype(query.dtype)


# --- Recurrent decoding: a ring buffer of the last `window` keys and values ---

def decode_init(batch, heads, head_dim, value_dim, *, dtype, max_len=None, window=DEFAULT_WINDOW):
  """`window` slots of keys and values, each slot's real-key mask and the number
  of tokens so far: O(window·d) memory. max_len is unused (the window bounds the state)."""
  del max_len
  check_window('decode_init', window)
  b, h = batch, heads
  return {'key': jnp.zeros((b, window, h, head_dim), dtype),
          'value': jnp.zeros((b, window, h, value_dim), dtype),
          'mask': jnp.zeros((b, window), bool), 'length': jnp.zeros((), jnp.int32)}


def decode_step(state, q, k, v, w, *, precision=None):
  """One token at slot length % window, overwriting the token `window` positions back: O(window·d)."""
  slot = state['length'] % state['key'].shape[1]
  real = w[:, 0, 0] > 0
  state = {'key': lax.dynamic_update_slice_in_dim(state['key'], k[:, None], slot, axis=1),
           'value': lax.dynamic_update_slice_in_dim(state['value'], v[:, None], slot, axis=1),
           'mask': lax.dynamic_update_slice_in_dim(state['mask'], real[:, None], slot, axis=1),
           'length': state['length'] + 1}
  scores = jnp.einsum('bhd,blhd->bhl', q, state['key'], precision=precision) / math.sqrt(q.shape[-1])
  allowed = state['mask'][:, None, :]
  weights = jax.nn.softmax(jnp.where(allowed, scores, NEG), axis=-1)
  weights = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), weights, 0.0)
  return jnp.einsum('bhl,blhe->bhe', weights, state['value'], precision=precision), state


def prefill(k, v, mask, *, max_len=None, precision=None, window=DEFAULT_WINDOW):
  """The ring after k, v [b, n, h, *] (mask [b, n, 1, 1]): position p of the last
  `window` in slot p % window, as `decode_step` would have placed it."""
  del max_len, precision
  b, n, h, d = k.shape
  state = decode_init(b, h, d, v.shape[-1], dtype=k.dtype, window=window)
  slots = np.arange(window)
  # The latest position p < n with p % window == slot (negative: the slot is still empty).
  position = slots + window * ((n - 1 - slots) // window)
  filled = position >= 0
  take = np.where(filled, position, 0)
  keep = lambda x, empty: jnp.where(filled.reshape((1, window) + (1,) * (x.ndim - 2)), x[:, take],
                                    empty)
  return {'key': keep(k, state['key']), 'value': keep(v, state['value']),
          'mask': keep(mask[:, :, 0, 0] > 0, state['mask']), 'length': jnp.asarray(n, jnp.int32)}


# Matmul FLOPs of one forward call (2 per multiply-add) over the keys each query
# may see (the blocked form computes twice, bidirectional three times, as many).
FLOP_FORMULA = {False: '4·b·h·n·(2w−1)·d  (Q·Kᵀ and P·V over ±(w−1) keys)',
                True: '4·b·h·n·w·d  (Q·Kᵀ and P·V over w keys)'}


def flops(b, n, h, d, *, causal=False, window=DEFAULT_WINDOW, **_):  # pylint: disable=redefined-outer-name
  return 4 * b * h * n * (window if causal else 2 * window - 1) * d
