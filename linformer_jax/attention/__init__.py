"""Attention kernels: pure `jnp`, no Flax, no config. One module per kind, one record per kind.

Every kernel takes arrays laid out like `jax.nn.dot_product_attention`:
  query [batch, q_len, heads, d], key [batch, kv_len, heads, d],
  value [batch, kv_len, heads, d_v]  ->  out [batch, q_len, heads, d_v].
`key_mask` is [batch, kv_len] bool, True for a real token. Outputs have the
query's dtype. A query whose allowed keys are all masked gets zeros; an empty
query or key sequence gives an empty (or zero) output of the right shape.
Numerics and `precision`: see `attention.common`.

`TABLE` maps each kind's name to its `Kind` record; everything that needs to
know what a kind can do (validation, `attend`, the linen and NNX layers, the
models, generation, the benchmarks) reads it. A new kind is a new module with
its functions and one record here; a new implementation is a new entry in its
kind's module and record.
"""
import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from linformer_jax.attention import common
from linformer_jax.attention import context_parallel as _cp
from linformer_jax.attention import elu_linear as _elu
from linformer_jax.attention import linear as _linear
from linformer_jax.attention import linear_window as _linear_window
from linformer_jax.attention import linformer as _linformer
from linformer_jax.attention import naive
from linformer_jax.attention import softmax as _softmax
from linformer_jax.attention import window as _window
from linformer_jax.attention.context_parallel import attend_sharded
from linformer_jax.attention.elu_linear import elu_linear_attention
from linformer_jax.attention.linear import linear_attention
from linformer_jax.attention.linear_window import linear_window_attention
from linformer_jax.attention.linformer import linformer_attention
from linformer_jax.attention.softmax import softmax_attention
from linformer_jax.attention.window import window_attention


@dataclasses.dataclass(frozen=True)
class Kind:
  """What one attention kind provides.

  parallel(q, k, v, *, key_mask, implementation, precision[, projections]) and
  causal(q, k, v, *, key_mask, chunk_size, implementation, precision,
  initial_state) (None: no causal form; initial_state is a decoding state of
  earlier positions, where the kind can start from one) compute it; decode_init(batch, heads, d, d_v, *, dtype,
  max_len), decode_step(state, q, k, v, w, *, precision) and prefill(k, v,
  mask, *, max_len, precision) decode it one token at a time (None: no
  recurrent form). `implementations` are the names `implementation=` accepts
  besides None (the best for the backend); `causal_implementations` likewise
  for the causal form. naive(q, k, v, mask, causal[, projections]) is the
  explicit reference. A `windowed` kind's parallel, causal, decode_init and
  prefill also take `window=` (its decode_step reads it from the state's shape).
  A `gated` kind's parallel, causal and decode_step also take `gate=`, per-head
  logits [heads] (None: zeros), a parameter the layer must create.
  context_parallel computes the kind on a sequence split over a mesh axis
  (context_parallel.py; None: the kind has no such form).
  """
  name: str
  parallel: Callable
  causal: Callable | None = None
  decode_init: Callable | None = None
  decode_step: Callable | None = None
  prefill: Callable | None = None
  needs_projections: bool = False  # Linformer's E, F: parameters the layer must create
  bounded_context: bool = False    # inputs (linformer) or decoding state (a KV cache) end at max_len
  supports_rotary: bool = False    # rotary positions keep their meaning through this kernel
  windowed: bool = False           # takes window= (the sliding window's size)
  gated: bool = False              # takes gate= (per-head mixing logits [heads]: a layer parameter)
  takes_initial_state: bool = False  # its causal form can start from a decoding state
  implementations: tuple = ()
  causal_implementations: tuple = ()
  naive: Callable | None = None    # the explicit O(n²) reference (naive.py), for tests and benchmarks
  # The sequence split over a mesh axis (context_parallel.py): fn(q, k, v, *, axis_name,
  # key_mask, causal, chunk_size, implementation, precision[, projections]) on this
  # device's shard, inside shard_map. None: no exact form with O(1)-in-n communication.
  context_parallel: Callable | None = None
  # Matmul FLOPs of one forward call: flops(b, n, h, d, *, causal, chunk, rows, window),
  # and the formula in words by causal (for benchmark reports).
  flops: Callable | None = None
  flop_formula: dict = dataclasses.field(default_factory=dict)

  @property
  def decodes(self):
    return self.decode_step is not None


def _causal_of(fn):
  def causal(q, k, v, *, key_mask=None, chunk_size=64, implementation=None, precision=None,
             initial_state=None):
    return fn(q, k, v, key_mask=key_mask, causal=True, chunk_size=chunk_size,
              implementation=implementation, precision=precision, initial_state=initial_state)
  return causal


def _softmax_causal(q, k, v, *, key_mask=None, chunk_size=None, implementation=None, precision=None,
                    initial_state=None):
  del chunk_size, initial_state  # attend refuses one: the record says takes_initial_state=False
  return softmax_attention(q, k, v, key_mask=key_mask, causal=True, implementation=implementation,
                           precision=precision)


def _window_causal(q, k, v, *, key_mask=None, chunk_size=None, implementation=None, precision=None,
                   window=_window.DEFAULT_WINDOW, initial_state=None):
  del chunk_size, initial_state  # attend refuses one: the record says takes_initial_state=False
  return window_attention(q, k, v, key_mask=key_mask, causal=True, window=window,
                          implementation=implementation, precision=precision)


def _linear_window_causal(q, k, v, *, key_mask=None, chunk_size=64, implementation=None,
                          precision=None, window=_window.DEFAULT_WINDOW, initial_state=None,
                          gate=None):
  del initial_state  # attend refuses one: the record says takes_initial_state=False
  return linear_window_attention(q, k, v, gate=gate, key_mask=key_mask, causal=True, window=window,
                                 chunk_size=chunk_size, implementation=implementation,
                                 precision=precision)


def _linformer_parallel(q, k, v, *, key_mask=None, implementation=None, precision=None,
                        projections=None):
  del implementation
  return linformer_attention(q, k, v, *projections, key_mask=key_mask, precision=precision)


def _decoders(module):
  return dict(decode_init=module.decode_init, decode_step=module.decode_step, prefill=module.prefill)


def _module(module, decodes=True):
  """The record fields a kind's module provides: FLOPs, and its decoder."""
  fields = dict(flops=module.flops, flop_formula=module.FLOP_FORMULA)
  return {**fields, **(_decoders(module) if decodes else {})}


TABLE = {kind.name: kind for kind in (
    Kind('softmax', functools.partial(softmax_attention, causal=False), _softmax_causal,
         bounded_context=True, supports_rotary=True, implementations=_softmax.IMPLEMENTATIONS,
         causal_implementations=_softmax.IMPLEMENTATIONS, naive=naive.softmax,
         **_module(_softmax)),
    Kind('linformer', _linformer_parallel, needs_projections=True, bounded_context=True,
         naive=naive.linformer, context_parallel=_cp.linformer,
         **_module(_linformer, decodes=False)),
    Kind('linear', functools.partial(linear_attention, causal=False), _causal_of(linear_attention),
         causal_implementations=_linear.IMPLEMENTATIONS, naive=naive.linear, takes_initial_state=True,
         context_parallel=_cp.linear, **_module(_linear)),
    Kind('elu_linear', functools.partial(elu_linear_attention, causal=False),
         _causal_of(elu_linear_attention), causal_implementations=_elu.IMPLEMENTATIONS,
         naive=naive.elu_linear, takes_initial_state=True, context_parallel=_cp.elu_linear,
         **_module(_elu)),
    # bounded_context=False: the decoding state is `window` slots, whatever the length.
    Kind('window', functools.partial(window_attention, causal=False), _window_causal,
         supports_rotary=True, windowed=True, implementations=_window.IMPLEMENTATIONS,
         causal_implementations=_window.IMPLEMENTATIONS, naive=naive.window,
         **_module(_window)),
    # The paper's attention and the window on the same q, k, v, mixed per head by a learned gate.
    Kind('linear+window', functools.partial(linear_window_attention, causal=False),
         _linear_window_causal, windowed=True, gated=True, naive=naive.linear_window,
         implementations=_linear_window.IMPLEMENTATIONS,
         causal_implementations=_linear_window.IMPLEMENTATIONS,
         **_module(_linear_window)),
)}

# The kernel kinds, by the name `attend` and the modules use.
KINDS = tuple(TABLE)
# The kinds with a causal form.
CAUSAL_KINDS = tuple(name for name, kind in TABLE.items() if kind.causal is not None)
# The kinds with a recurrent decoder.
DECODE_KINDS = tuple(name for name, kind in TABLE.items() if kind.decodes)


def get(name):
  """The `Kind` record of `name`; ValueError naming the valid kinds otherwise."""
  if name not in TABLE:
    raise ValueError(f'unknown attention kind {name!r}; valid: {KINDS}')
  return TABLE[name]


def check(name, *, causal=False, decoding=False):
  """The record of `name`, after checking it has what a causal or decoding use needs."""
  kind = get(name)
  if causal and kind.causal is None:
    raise ValueError(f'{name!r} attention has no causal form; use one of {CAUSAL_KINDS} for '
                     'causal attention')
  if decoding and not kind.decodes:
    raise ValueError(f'no recurrent decoder for attention kind {name!r}; valid: {DECODE_KINDS}')
  return kind


def check_call(kind, *, causal=False, implementation=None, projections=None):
  """The record of `kind`, after checking that a call's causal, implementation and
  projections arguments fit it (ValueError naming the valid ones otherwise)."""
  record = check(kind, causal=causal)
  valid = record.causal_implementations if causal else record.implementations
  if implementation is not None and implementation not in valid:
    raise ValueError(f'{kind!r} attention{" (causal)" if causal else ""} has no implementation '
                     f'{implementation!r}; valid: None (the best for the backend) or one of {valid}')
  if record.needs_projections:
    if projections is None or len(projections) != 2:
      raise ValueError(f'{kind!r} attention needs projections=(e_proj, f_proj), each [k, max_len] '
                       f'or [heads, k, max_len]; got {projections!r}')
  elif projections is not None:
    raise ValueError(f'projections are for linformer attention only, not {kind!r}')
  return record


def _window_kwargs(kind, record, window):
  """{'window': window} for a windowed kind (None: its default), {} otherwise."""
  if window is None:
    return {}
  if not record.windowed:
    windowed = tuple(name for name, k in TABLE.items() if k.windowed)
    raise ValueError(f'window={window!r} is for the windowed kinds {windowed}, not {kind!r}')
  return {'window': window}


def _gate_kwargs(kind, record, gate):
  """{'gate': gate} for a gated kind (None: its default, zeros), {} otherwise."""
  if gate is None:
    return {}
  if not record.gated:
    gated = tuple(name for name, k in TABLE.items() if k.gated)
    raise ValueError(f'gate= is for the gated kinds {gated}, not {kind!r}')
  return {'gate': gate}


def attend(kind, query, key, value, *, key_mask=None, causal=False, chunk_size=64, projections=None,
           implementation=None, precision=None, initial_state=None, window=None, gate=None):
  """The kernel named `kind` (one of KINDS) on [batch, n, heads, d] inputs.

  `projections` = (e_proj, f_proj) for kinds that need them ('linformer'; see
  `linformer_attention`); `chunk_size` applies to the chunked causal kernels;
  `implementation` (None: the best for the backend) must be one the kind's
  record lists. `initial_state` (causal linear kinds): the decoding state of
  the positions before these (`causal_state`); `window` is the sliding window
  of windowed kinds ('window', 'linear+window'; None: the kernel's default,
  64); `gate` the per-head mixing logits [heads] of gated kinds
  ('linear+window'; None: zeros, an even mix). Raises ValueError for an
  unknown kind, a causal call of a kind without a causal form, missing or
  misplaced projections, or a window or gate for a kind without one.
  """
  record = check_call(kind, causal=causal, implementation=implementation, projections=projections)
  kwargs = dict(key_mask=key_mask, implementation=implementation, precision=precision,
                **_window_kwargs(kind, record, window), **_gate_kwargs(kind, record, gate))
  if record.needs_projections:
    kwargs['projections'] = projections
  if initial_state is not None and not (causal and record.takes_initial_state):
    takers = tuple(name for name, k in TABLE.items() if k.takes_initial_state)
    raise ValueError(f'initial_state is for causal attention of the kinds {takers}; got '
                     f'{kind!r} with causal={causal}')
  if causal:
    return record.causal(query, key, value, chunk_size=chunk_size, initial_state=initial_state,
                         **kwargs)
  return record.parallel(query, key, value, **kwargs)


# --- Recurrent decoding: one token at a time, equal to the causal kernels ---

def decode_init(kind, batch, heads, head_dim, value_dim, *, max_len=None, dtype=jnp.float32,
                window=None):
  """The empty decoding state of `kind` (one of DECODE_KINDS), a dict of arrays.

  'linear': running per-feature max m [batch, heads, head_dim], z = sum exp(k - m)
  (same shape) and S = sum exp(k - m) vᵀ [batch, heads, head_dim, value_dim]:
  O(d·d_v) memory whatever the length. 'elu_linear': z = sum phi(k), S = sum
  phi(k) vᵀ. 'softmax': a KV cache of `max_len` slots (required), the real-key
  mask of each slot and the number of tokens so far: O(max_len·d) memory.
  'window': a ring of the last `window` keys and values (None: 64), their mask
  and the number of tokens so far: O(window·d) memory, max_len unused.
  'linear+window': that ring and that (m, z, S) in one dict.
  """
  record = check(kind, decoding=True)
  return record.decode_init(batch, heads, head_dim, value_dim, max_len=max_len, dtype=dtype,
                            **_window_kwargs(kind, record, window))


@functools.partial(jax.jit, static_argnames=('kind', 'precision'))
def decode_step(kind, state, query, key, value, *, key_mask=None, precision=None, gate=None):
  """One causal step: (out [batch, heads, value_dim], new state).

  query, key [batch, heads, head_dim], value [batch, heads, value_dim] are the
  next position's; key_mask [batch] bool, False where this token is padding (its
  key and value add nothing). Feeding positions 0..n-1 in order gives the
  causal kernel's outputs (`attend(kind, ..., causal=True)`). Computes in the
  state's dtype, returns the query's. `gate`: the per-head logits [heads] of
  a gated kind (None: zeros). Cost per token: O(d·d_v) for the linear
  kinds, O(max_len·d) for 'softmax' (past max_len tokens its outputs are NaN),
  O(window·d) for 'window' (its window is the state's), the sum of both for
  'linear+window'.
  """
  record = check(kind, decoding=True)
  gated = _gate_kwargs(kind, record, gate)
  b, h, d = query.shape
  if key.shape != (b, h, d) or value.shape[:2] != (b, h) or value.ndim != 3:
    raise ValueError(f'decode_step: query and key must be [batch, heads, head_dim] and value '
                     f'[batch, heads, value_dim]; got {query.shape}, {key.shape}, {value.shape}')
  if key_mask is not None and tuple(key_mask.shape) != (b,):
    raise ValueError(f'decode_step: key_mask must be [batch] = ({b},), got {tuple(key_mask.shape)}')
  dtype = next(x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating))
  q, k, v = (x.astype(dtype) for x in (query, key, value))
  real = jnp.ones((b,), bool) if key_mask is None else key_mask
  out, state = record.decode_step(state, q, k, v, real.astype(dtype)[:, None, None],
                                  precision=precision, **gated)
  return out.astype(query.dtype), state


@functools.partial(jax.jit, static_argnames=('kind', 'max_len', 'precision', 'window'))
def causal_state(kind, key, value, *, key_mask=None, max_len=None, precision=None, window=None):
  """The decoding state after positions 0..n-1, computed in parallel (prefill).

  key [batch, n, heads, head_dim], value [batch, n, heads, value_dim] ->
  the state n `decode_step` calls from `decode_init` would give (to rounding),
  in float32 (float64 inputs: float64). Run `attend(kind, ..., causal=True)` on the
  prompt for its outputs, then `decode_step` from this state. 'softmax' needs
  max_len >= n (default n); 'window' takes `window` (None: 64), the same as
  its causal kernel's. Cost O(n·d·d_v) (softmax: O(max_len·d) copy).
  """
  record = check(kind, decoding=True)
  windowed = _window_kwargs(kind, record, window)
  if key.ndim != 4 or value.ndim != 4 or value.shape[:3] != key.shape[:3]:
    raise ValueError(f'causal_state: key and value must be [batch, n, heads, dim] with equal batch, '
                     f'n and heads; got {key.shape}, {value.shape}')
  b, n, h, d = key.shape
  if key_mask is not None and tuple(key_mask.shape) != (b, n):
    raise ValueError(f'causal_state: key_mask shape {tuple(key_mask.shape)} must be [batch, n] = {(b, n)}')
  dtype = jnp.promote_types(jnp.result_type(key, value), jnp.float32)
  k, v = key.astype(dtype), value.astype(dtype)
  if n == 0 and not record.bounded_context:
    return record.decode_init(b, h, d, v.shape[-1], dtype=dtype, **windowed)
  return record.prefill(k, v, common.mask_as(key_mask, k), max_len=max_len, precision=precision,
                        **windowed)


def flax_attention_fn(kind, *, causal=False, e_proj=None, f_proj=None, chunk_size=64,
                      implementation=None, precision=None, window=None):
  """An `attention_fn=` for `flax.linen.MultiHeadDotProductAttention`.

  kind: one of KINDS. Linformer needs its projections; Flax's module has no
  place to learn them, so pass fixed `e_proj`/`f_proj` arrays here (or use
  `linformer_jax.MultiHeadAttention`, which learns them). The returned function
  accepts no mask or a key-padding mask broadcastable over the heads and query
  axes ([batch, 1, 1, kv_len]); any other mask (causal, query-dependent) raises
  ValueError: use `causal=True` for causal attention. Attention-weight dropout
  is not supported (the linear kernels never form the weights). A gated kind
  ('linear+window') gets its default gate here, an even mix in every head
  (its learned gate lives in `linformer_jax.MultiHeadAttention`).
  """
  record = check(kind, causal=causal)
  projections = None
  if record.needs_projections:
    if e_proj is None or f_proj is None:
      raise ValueError(f"flax_attention_fn({kind!r}) needs e_proj and f_proj arrays "
                       '([k, max_len]): Linformer projections are parameters that '
                       'flax.linen.MultiHeadDotProductAttention cannot create; use '
                       'linformer_jax.MultiHeadAttention to learn them')
    projections = (e_proj, f_proj)

  def attention_fn(query, key, value, mask=None, dropout_rate=0.0, deterministic=True):
    if dropout_rate > 0.0 and not deterministic:
      raise ValueError(f'attention dropout (dropout_rate={dropout_rate}) is not supported by the '
                       f'{kind!r} kernel; set dropout_rate=0 on the attention module')
    key_mask = None
    if mask is not None:
      if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise ValueError(f'{kind!r} attention takes only a key-padding mask of shape '
                         f'[batch, 1, 1, kv_len]; got mask shape {mask.shape}. A mask that varies '
                         'over queries or heads cannot be applied without forming the n×n '
                         'weights; for causal attention use flax_attention_fn(kind, causal=True)')
      key_mask = jnp.broadcast_to(mask[:, 0, 0, :], key.shape[:2]).astype(bool)
    return attend(kind, query, key, value, key_mask=key_mask, causal=causal, chunk_size=chunk_size,
                  projections=projections, implementation=implementation, precision=precision,
                  window=window)

  return attention_fn
