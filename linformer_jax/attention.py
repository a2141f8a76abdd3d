"""Attention kernels: pure `jnp`, no Flax, no config.

Every kernel takes arrays laid out like `jax.nn.dot_product_attention`:
  query [batch, q_len, heads, d], key [batch, kv_len, heads, d],
  value [batch, kv_len, heads, d_v]  ->  out [batch, q_len, heads, d_v].
`key_mask` is [batch, kv_len] bool, True for a real token. Outputs have the
query's dtype; softmaxes and sums run in float32. A query whose allowed keys are
all masked gets zeros.

The paper's attention (Verma 2021, arXiv:2101.10277), per head:

    out = softmax_feat(Q) · (softmax_seq(K)ᵀ · V)

softmax_feat normalises each query row over its d features, softmax_seq each key
feature column over the (unmasked; when causal, the j <= i prefix) positions.
No 1/sqrt(d) scaling. Kᵀ V is formed first: O(n·d·d_v) time, O(n·d + d·d_v)
memory, and no n×n (or n×k) array ever exists.
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

# Finite stand-in for -inf: masked keys never produce inf - inf = NaN, forward or
# backward.
_NEG = -1e30
# A chunk whose keys spread more than this (in log space) below the chunk's max
# takes the exact pairwise path instead of the factorised matmul (see below).
_MAX_SHIFT = 40.0


def _check_inputs(name, query, key, value, key_mask, causal=False, chunk_size=None):
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
  if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
    raise ValueError(f'{name}: chunk_size must be a positive int, got {chunk_size!r}')


def _heads_first(x):
  """[b, n, h, f] <-> [b, h, n, f]."""
  return x.transpose(0, 2, 1, 3)


def _upcast(*xs):
  """Inputs in the compute dtype: at least float32 (float64 stays float64)."""
  dtype = jnp.promote_types(jnp.result_type(*xs), jnp.float32)
  return tuple(x.astype(dtype) for x in xs)


def _safe_div(x, den):
  """x / den where den > 0, else 0 (a query with no allowed key); NaN-free gradients."""
  return jnp.where(den > 0, x / jnp.where(den > 0, den, 1.0), 0.0)


def _mask_as(key_mask, x):
  """[batch, kv_len, 1, 1] mask of real keys in x's dtype (all ones when no mask)."""
  if key_mask is None:
    return jnp.ones(x.shape[:2] + (1, 1), x.dtype)
  return key_mask.astype(x.dtype)[:, :, None, None]


@functools.partial(jax.jit, static_argnames=('causal',))
def softmax_attention(query, key, value, *, key_mask=None, causal=False):
  """Exact softmax attention with 1/sqrt(d) scaling: O(n²) time and memory.

  The reference the other kernels are compared with. With `causal`, query i sees
  keys j <= i (q_len must equal kv_len).
  """
  _check_inputs('softmax_attention', query, key, value, key_mask, causal)
  q, k, v = _upcast(query, key, value)
  scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(q.shape[-1])
  allowed = None
  if key_mask is not None:
    allowed = key_mask[:, None, None, :]
  if causal:
    n = q.shape[1]
    tril = jnp.tril(jnp.ones((n, n), bool))[None, None]
    allowed = tril if allowed is None else allowed & tril
  if allowed is not None:
    scores = jnp.where(allowed, scores, _NEG)
  weights = jax.nn.softmax(scores, axis=-1)
  if allowed is not None:
    # A row with every key masked would otherwise be a uniform average.
    weights = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), weights, 0.0)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v).astype(query.dtype)


@jax.jit
def linformer_attention(query, key, value, e_proj, f_proj, *, key_mask=None):
  """Linformer attention (Wang et al. 2020): keys and values projected to k rows.

    out = softmax(Q (E K)ᵀ / sqrt(d)) (F V)

  Args:
    e_proj, f_proj: [k, max_len] projections shared by all heads, or
      [heads, k, max_len] one per head. A length-n input uses the first n
      columns, so any n <= max_len works.
  Padded keys and values are zeroed before projecting, so they influence
  nothing. Cost O(n·k·d) time, O(n·d + n·k) memory (the query-by-k scores).
  """
  _check_inputs('linformer_attention', query, key, value, key_mask)
  n, heads = key.shape[1], key.shape[2]
  for name, p in (('e_proj', e_proj), ('f_proj', f_proj)):
    if p.ndim not in (2, 3) or (p.ndim == 3 and p.shape[0] != heads):
      raise ValueError(f'linformer_attention: {name} must be [k, max_len] or [heads={heads}, k, max_len], '
                       f'got shape {p.shape}')
    if n > p.shape[-1]:
      raise ValueError(f'linformer_attention: sequence length {n} exceeds the projections\' max_len '
                       f'{p.shape[-1]}; use inputs of at most {p.shape[-1]} tokens or build the '
                       'projections with a larger max_len')
  q, k, v, e_proj, f_proj = _upcast(query, key, value, e_proj, f_proj)
  mask = _mask_as(key_mask, k)
  k, v = k * mask, v * mask

  def project(p, x):
    p = p[..., :n]
    spec = 'rn,bnhd->brhd' if p.ndim == 2 else 'hrn,bnhd->brhd'
    return jnp.einsum(spec, p, x)

  out = softmax_attention(q, project(e_proj, k), project(f_proj, v))
  if key_mask is not None:
    out = out * jnp.any(key_mask, axis=1)[:, None, None, None]
  return out.astype(query.dtype)


# --- Chunked causal machinery, shared by both linear kernels. ---

def _to_chunks(x, chunk_size, **pad_kwargs):
  """[b, n, h, f] -> [n_chunks, b, h, chunk, f], padding n up to a multiple (zeros by default)."""
  b, n, h, f = x.shape
  pad = -n % chunk_size
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)), **pad_kwargs)
  x = x.reshape(b, (n + pad) // chunk_size, chunk_size, h, f)
  return x.transpose(1, 0, 3, 2, 4)


def _from_chunks(x, n):
  """[n_chunks, b, h, chunk, f] -> [b, n, h, f]."""
  c, b, h, size, f = x.shape
  return x.transpose(1, 0, 3, 2, 4).reshape(b, c * size, h, f)[:, :n]


def _tril(size):
  return jnp.tril(jnp.ones((size, size), bool))


def _intra_chunk(a, b, v):
  """sum_{j <= i within the chunk} (a_i · b_j) v_j: [.., C, d] x [.., C, d] x [.., C, e]."""
  scores = jnp.einsum('bhid,bhjd->bhij', a, b)
  scores = jnp.where(_tril(a.shape[-2]), scores, 0.0)
  return jnp.einsum('bhij,bhje->bhie', scores, v)


def _scan_chunks(body, init, xs):
  # Rematerialised body: the backward pass keeps only each chunk's inputs and
  # carry, so gradient memory stays O(n·d + d·d_v).
  _, out = lax.scan(jax.checkpoint(body), init, xs)
  return out


def _causal_linear(qs, k, mask, v, chunk_size):
  """Causal form of the paper's attention, chunk by chunk; inputs already upcast.

  out_i = sum_f qs_if · [sum_{j<=i} exp(k_jf) v_j] / [sum_{j<=i} exp(k_jf)]

  As in online softmax, the scan carries the running max m, the running sums
  z = sum exp(k - m) and S = sum exp(k - m) v. Within a chunk everything is
  shifted by the chunk's max m_c (>= m): the prefix sums are masked C×C matmuls
  and every term is <= 1, so nothing overflows. A position whose keys so far all
  lie more than _MAX_SHIFT below m_c (a later key in its chunk dwarfs them) would
  get a denominator near underflow; then the chunk takes an exact pairwise
  C×C×d path that normalises each position by its own prefix max (rare: it
  needs keys spread by > 40 nats). Shifts carry no gradient: the output does
  not depend on them.
  """
  n = k.shape[1]
  # Padding past n adds no key (k = _NEG, w = 0) and no query.
  xs = (_to_chunks(qs, chunk_size), _to_chunks(k, chunk_size, constant_values=_NEG),
        _to_chunks(mask * jnp.ones_like(k[..., :1]), chunk_size), _to_chunks(v, chunk_size))
  b, h, d = qs.shape[0], qs.shape[2], k.shape[-1]
  init = (jnp.full((b, h, d), _NEG, k.dtype), jnp.zeros((b, h, d), k.dtype),
          jnp.zeros((b, h, d, v.shape[-1]), k.dtype))
  tril = _tril(chunk_size)
  prefix_sum = functools.partial(jnp.einsum, 'ij,bhjd->bhid', tril.astype(k.dtype))

  def body(carry, chunk):
    m_prev, z, s = carry
    qs, k, w, v = chunk  # w: [b, h, C, 1], 1 for a real key
    m_c = lax.stop_gradient(jnp.maximum(m_prev, jnp.max(k, axis=2)))
    decay = jnp.exp(m_prev - m_c)  # <= 1
    b_ = w * jnp.exp(k - m_c[:, :, None])  # <= 1

    den = prefix_sum(b_) + (decay * z)[:, :, None]  # shifted by m_c

    def factorised():
      qn = _safe_div(qs, den)
      scores = jnp.einsum('bhid,bhjd->bhij', qn, b_)
      return jnp.where(tril, scores, 0.0), qn * decay[:, :, None]

    def pairwise():
      # M_i: each position's own prefix max; e[i, j, f] = exp(k_jf - M_if) <= 1
      # for j <= i. The exponent is masked with `where`, not clamped with
      # `minimum`: k_j - M_i = 0 for the key that is the max, a kink where
      # `minimum` would split the gradient 50/50.
      big_m = lax.stop_gradient(jnp.maximum(m_prev[:, :, None], lax.cummax(k, axis=2)))
      carried = jnp.exp(m_prev[:, :, None] - big_m)
      e = w[:, :, None] * jnp.exp(
          jnp.where(tril[..., None], k[:, :, None] - big_m[:, :, :, None], _NEG))
      qn = _safe_div(qs, jnp.sum(e, axis=3) + carried * z[:, :, None])
      return jnp.einsum('bhid,bhijd->bhij', qn, e), qn * carried

    # Some position has a real key so far, but a tiny denominator.
    has_key = (prefix_sum(w) > 0) | (z[:, :, None, :1] > 0)
    needs_exact = jnp.any(has_key & (den < math.exp(-_MAX_SHIFT)))
    # Checkpointed, so that differentiating the cond does not save the unused
    # pairwise branch's C×C×d residuals (zeros) for every chunk.
    scores, q_carried = lax.cond(needs_exact, jax.checkpoint(pairwise), factorised)
    out = jnp.einsum('bhcd,bhde->bhce', q_carried, s) + jnp.einsum('bhij,bhje->bhie', scores, v)
    return (m_c, z * decay + jnp.sum(b_, axis=2),
            s * decay[..., None] + jnp.einsum('bhjd,bhje->bhde', b_, v)), out

  return _from_chunks(_scan_chunks(body, init, xs), n)


@functools.partial(jax.jit, static_argnames=('causal', 'chunk_size'))
def linear_attention(query, key, value, *, key_mask=None, causal=False, chunk_size=64):
  """The paper's linear attention: softmax_feat(Q) · (softmax_seq(K)ᵀ V).

  Non-causal: softmax_seq runs over the unmasked keys. Causal: query i uses the
  prefix j <= i, computed by a lax.scan over chunks of `chunk_size` carrying a
  running max and sum. Cost O(n·d·d_v) time (causal adds O(n·chunk·d));
  memory O(n·d + d·d_v) (causal adds O(chunk²) per batch and head).
  """
  _check_inputs('linear_attention', query, key, value, key_mask, causal, chunk_size)
  q, k, v = _upcast(query, key, value)
  qs = jax.nn.softmax(q, axis=-1)
  mask = _mask_as(key_mask, k)
  k = jnp.where(mask > 0, k, _NEG)
  if causal:
    return _causal_linear(qs, k, mask, v, chunk_size).astype(query.dtype)
  m = lax.stop_gradient(jnp.max(k, axis=1, keepdims=True))
  # Both contractions head-major: XLA:CPU's dots are several times slower with the
  # heads axis between n and d (benchmarks/linear_variants.py); the transposes fuse
  # into the elementwise ops that produce their inputs.
  e = _heads_first(mask * jnp.exp(k - m))
  z = jnp.sum(e, axis=2)
  kv = jnp.einsum('bhnd,bhne->bhde', e, _heads_first(v)) / jnp.where(z > 0, z, 1.0)[..., None]
  return _heads_first(jnp.einsum('bhnd,bhde->bhne', _heads_first(qs), kv)).astype(query.dtype)


@functools.partial(jax.jit, static_argnames=('causal', 'chunk_size'))
def elu_linear_attention(query, key, value, *, key_mask=None, causal=False, chunk_size=64):
  """Kernelised linear attention of Katharopoulos et al. 2020, with phi = elu + 1.

    out_i = phi(q_i)ᵀ sum_j phi(k_j) v_jᵀ / phi(q_i)ᵀ sum_j phi(k_j)

  over unmasked j (and j <= i when causal, chunked like `linear_attention`).
  Cost O(n·d·d_v) time, O(n·d + d·d_v) memory.
  """
  _check_inputs('elu_linear_attention', query, key, value, key_mask, causal, chunk_size)
  q, k, v = _upcast(query, key, value)
  phi_q = jax.nn.elu(q) + 1.0
  phi_k = (jax.nn.elu(k) + 1.0) * _mask_as(key_mask, k)
  # A column of ones in V makes the denominator come out of the same sums.
  v1 = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)
  if causal:
    b, n, h, d = phi_k.shape
    init = jnp.zeros((b, h, d, v1.shape[-1]), v1.dtype)

    def body(s, chunk):
      a, b_, v1 = chunk
      out = jnp.einsum('bhcd,bhde->bhce', a, s) + _intra_chunk(a, b_, v1)
      return s + jnp.einsum('bhjd,bhje->bhde', b_, v1), out

    xs = tuple(_to_chunks(x, chunk_size) for x in (phi_q, phi_k, v1))
    num = _from_chunks(_scan_chunks(body, init, xs), n)
  else:  # head-major, as in linear_attention
    phi_q, phi_k, v1 = _heads_first(phi_q), _heads_first(phi_k), _heads_first(v1)
    num = _heads_first(jnp.einsum('bhnd,bhde->bhne', phi_q, jnp.einsum('bhnd,bhne->bhde', phi_k, v1)))
  return _safe_div(num[..., :-1], num[..., -1:]).astype(query.dtype)


KERNELS = {
    'softmax': softmax_attention,
    'linformer': linformer_attention,
    'linear': linear_attention,
    'elu_linear': elu_linear_attention,
}


def flax_attention_fn(kind, *, causal=False, e_proj=None, f_proj=None, chunk_size=64):
  """An `attention_fn=` for `flax.linen.MultiHeadDotProductAttention`.

  kind: 'softmax' | 'linear' | 'elu_linear' | 'linformer'. Linformer needs its
  projections; Flax's module has no place to learn them, so pass fixed
  `e_proj`/`f_proj` arrays here (or use `linformer_jax.MultiHeadAttention`, which
  learns them). The returned function accepts no mask or a key-padding mask
  broadcastable over the heads and query axes ([batch, 1, 1, kv_len]); any other
  mask (causal, query-dependent) raises ValueError: use `causal=True` for causal
  attention. Attention-weight dropout is not supported (the linear kernels never
  form the weights).
  """
  if kind not in KERNELS:
    raise ValueError(f'unknown attention kind {kind!r}; valid: {sorted(KERNELS)}')
  if kind == 'linformer':
    if e_proj is None or f_proj is None:
      raise ValueError("flax_attention_fn('linformer') needs e_proj and f_proj arrays "
                       '([k, max_len]): Linformer projections are parameters that '
                       'flax.linen.MultiHeadDotProductAttention cannot create; use '
                       'linformer_jax.MultiHeadAttention to learn them')
    if causal:
      raise ValueError('linformer attention has no causal form')

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
    if kind == 'linformer':
      return linformer_attention(query, key, value, e_proj, f_proj, key_mask=key_mask)
    if kind == 'softmax':
      return softmax_attention(query, key, value, key_mask=key_mask, causal=causal)
    return KERNELS[kind](query, key, value, key_mask=key_mask, causal=causal, chunk_size=chunk_size)

  return attention_fn
