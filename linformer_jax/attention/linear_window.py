"""The paper's attention and sliding-window softmax in one layer, mixed per head by a gate.

Per head h, on the same queries, keys and values:

    out = g_h · window(Q, K, V) + (1 − g_h) · linear(Q, K, V),   g_h = sigmoid(gate_h)

window: exact softmax over the keys within `window` − 1 positions (window.py),
the local detail a fixed-size state keeps exactly; linear: the paper's
softmax_feat(Q) · (softmax_seq(K)ᵀ V) over the whole (causal: prefix) sequence
(linear.py), the global summary. `gate` [heads] are logits (the layer's
parameter; None: zeros, g = 0.5). Cost: the sum of both, O(n·(window + d)·d).
`implementation=` picks the window component's ('blocked' or 'jax'; None: its
default for the backend); the linear component runs its own default.

Recurrent decoding carries both states in one flat dict (their names do not
overlap): the window's ring of the last `window` keys and values ('key',
'value', 'mask', 'length') and the linear running sums ('m', 'z', 's'):
O(window·d + d·d_v) whatever the length. The window is part of that state's
shape, as for 'window'.
"""
import functools

import jax
import jax.numpy as jnp

from linformer_jax.attention import common
from linformer_jax.attention import linear as _linear
from linformer_jax.attention import window as _window
from linformer_jax.attention.window import DEFAULT_WINDOW

IMPLEMENTATIONS = _window.IMPLEMENTATIONS  # the window component's


def check_gate(name, gate, heads):
  """ValueError unless `gate` is None or has shape [heads]."""
  if gate is not None and tuple(jnp.shape(gate)) != (heads,):
    raise ValueError(f'{name}: gate must be the per-head gate logits, shape [heads] = ({heads},); '
                     f'got shape {tuple(jnp.shape(gate))}')


def mix(gate, local, global_, heads, dtype):
  """g·local + (1 − g)·global_ in float32 (float64 for float64 inputs), g = sigmoid(gate) per head
  on the heads axis (-2) of [..., heads, d_v] outputs; returned in `dtype`."""
  acc = jnp.promote_types(jnp.result_type(local, global_), jnp.float32)
  gate = jnp.zeros((heads,), acc) if gate is None else jnp.asarray(gate).astype(acc)
  g = jax.nn.sigmoid(gate)[:, None]  # [heads, 1]
  return (g * local.astype(acc) + (1 - g) * global_.astype(acc)).astype(dtype)


@functools.partial(jax.jit, static_argnames=('causal', 'window', 'chunk_size', 'implementation',
                                             'precision'))
def linear_window_attention(query, key, value, *, gate=None, key_mask=None, causal=False,
                            window=DEFAULT_WINDOW, chunk_size=64, implementation=None,
                            precision=None):
  """g·window_attention + (1 − g)·linear_attention on the same q, k, v (module docstring).

  query, key [batch, n, heads, d], value [batch, n, heads, d_v] -> [batch, n,
  heads, d_v] in the query's dtype; gate [heads] logits (None: zeros);
  key_mask [batch, n] bool. q_len must equal kv_len (the window is over
  positions). `window` and `causal` as in `window_attention`, `chunk_size` as
  in `linear_attention`'s causal form, `implementation` the window
  component's (see `window_attention`). Differentiable in q, k, v and gate.
  """
  common.check_implementation('linear_window_attention', implementation, IMPLEMENTATIONS)
  if query.ndim == 4:
    check_gate('linear_window_attention', gate, query.shape[2])
  local = _window.window_attention(query, key, value, key_mask=key_mask, causal=causal,
                                   window=window, implementation=implementation,
                                   precision=precision)
  global_ = _linear.linear_attention(query, key, value, key_mask=key_mask, causal=causal,
                                     chunk_size=chunk_size, precision=precision)
  return mix(gate, local, global_, query.shape[2], query.dtype)


# --- Recurrent decoding: both components' states side by side ---

WINDOW_STATE = ('key', 'value', 'mask', 'length')
LINEAR_STATE = ('m', 'z', 's')


def _split(state):
  return ({name: state[name] for name in WINDOW_STATE},
          {name: state[name] for name in LINEAR_STATE})


def decode_init(batch, heads, head_dim, value_dim, *, dtype, max_len=None, window=DEFAULT_WINDOW):
  """The empty ring and the empty (m, z, S), one dict: O(window·d + d·d_v) memory."""
  args = (batch, heads, head_dim, value_dim)
  return {**_window.decode_init(*args, dtype=dtype, max_len=max_len, window=window),
          **_linear.decode_init(*args, dtype=dtype, max_len=max_len)}


def decode_step(state, q, k, v, w, *, precision=None, gate=None):
  """One token of both components, mixed by the gate: q, k [b, h, d], v [b, h, e], w [b, 1, 1]."""
  check_gate('decode_step', gate, q.shape[1])
  window_state, linear_state = _split(state)
  local, window_state = _window.decode_step(window_state, q, k, v, w, precision=precision)
  global_, linear_state = _linear.decode_step(linear_state, q, k, v, w, precision=precision)
  out = mix(gate, local, global_, q.shape[1], local.dtype)
  return out, {**window_state, **linear_state}


def prefill(k, v, mask, *, max_len=None, precision=None, window=DEFAULT_WINDOW):
  """Both states after k, v [b, n, h, *] (mask [b, n, 1, 1]), computed in parallel."""
  return {**_window.prefill(k, v, mask, max_len=max_len, precision=precision, window=window),
          **_linear.prefill(k, v, mask, max_len=max_len, precision=precision)}


# Matmul FLOPs of one forward call: the two components' (the mix is elementwise).
FLOP_FORMULA = {causal: f'{_window.FLOP_FORMULA[causal]} + {_linear.FLOP_FORMULA[causal]}'
                for causal in (False, True)}


def flops(b, n, h, d, *, causal=False, window=DEFAULT_WINDOW, chunk=64, **_):  # pylint: disable=redefined-outer-name
  return (_window.flops(b, n, h, d, causal=causal, window=window) +
          _linear.flops(b, n, h, d, causal=causal, chunk=chunk))
