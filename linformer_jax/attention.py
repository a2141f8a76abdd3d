"""Attention kernels: pure `jnp`, no Flax, no config.

Every kernel takes arrays laid out like `jax.nn.dot_product_attention`:
  query [batch, q_len, heads, d], key [batch, kv_len, heads, d],
  value [batch, kv_len, heads, d_v]  ->  out [batch, q_len, heads, d_v].
`key_mask` is [batch, kv_len] bool, True for a real token. Outputs have the
query's dtype; softmaxes and sums run in float32. A query whose allowed keys are
all masked gets zeros; an empty query or key sequence gives an empty (or zero)
output of the right shape.

The paper's attention (Verma 2021, arXiv:2101.10277), per head:

    out = softmax_feat(Q) · (softmax_seq(K)ᵀ · V)

softmax_feat normalises each query row over its d features, softmax_seq each key
feature column over the (unmasked; when causal, the j <= i prefix) positions.
No 1/sqrt(d) scaling. Kᵀ V is formed first: O(n·d·d_v) time, O(n·d + d·d_v)
memory, and no n×n (or n×k) array ever exists.

`attend(kind, ...)` is the one entry point by name (`KINDS`); `decode_init`,
`decode_step` and `causal_state` run the causal kernels one token at a time.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The kernel kinds, by the name `attend` and the modules use.
KINDS = ('softmax', 'linformer', 'linear', 'elu_linear')
# The kinds with a causal form, and so a recurrent decoder.
DECODE_KINDS = ('linear', 'elu_linear', 'softmax')

# Finite stand-in for -inf: masked keys never produce inf - inf = NaN, forward or
# backward.
_NEG = -1e30
# A causal denominator below exp(-_MAX_SHIFT) (keys spread by more than this in a
# chunk) sends the call to the exact fallback (see _causal_linear).
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
  if chunk_size is not None and not _is_positive_int(chunk_size):
    raise ValueError(f'{name}: chunk_size must be a positive int, got {chunk_size!r}')


def _is_positive_int(x):
  # bool is an int subclass, but chunk_size=True is a mistake, not 1.
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and x >= 1


def _empty_output(query, key, value):
  """Zeros [batch, q_len, heads, d_v] when there is no query or no key, else None."""
  if query.shape[1] == 0 or key.shape[1] == 0:
    return jnp.zeros(query.shape[:3] + value.shape[-1:], query.dtype)
  return None


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
  empty = _empty_output(query, key, value)
  if empty is not None:
    return empty
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
      [heads, k, max_len] one per head; E and F must have the same k. A
      length-n input uses the first n columns, so any n <= max_len works.
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
  if e_proj.shape[-2] != f_proj.shape[-2]:
    raise ValueError(f'linformer_attention: e_proj and f_proj must project to the same number of rows k; '
                     f'got k = {e_proj.shape[-2]} (e_proj {e_proj.shape}) and k = {f_proj.shape[-2]} '
                     f'(f_proj {f_proj.shape})')
  empty = _empty_output(query, key, value)
  if empty is not None:
    return empty
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
  """[b, n, h, f] -> [b, h, n_chunks, chunk, f], padding n up to a multiple (zeros by default)."""
  b, n, h, f = x.shape
  pad = -n % chunk_size
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)), **pad_kwargs)
  return x.reshape(b, (n + pad) // chunk_size, chunk_size, h, f).transpose(0, 3, 1, 2, 4)


def _from_chunks(x, n):
  """[b, h, n_chunks, chunk, f] -> [b, n, h, f]."""
  b, h, c, size, f = x.shape
  return x.transpose(0, 2, 3, 1, 4).reshape(b, c * size, h, f)[:, :n]


def _tril(size):
  return jnp.tril(jnp.ones((size, size), bool))


def _intra_chunk(a, b, v):
  """sum_{j <= i within the chunk} (a_i · b_j) v_j: [.., C, d] x [.., C, d] x [.., C, e]."""
  scores = jnp.einsum('...id,...jd->...ij', a, b)
  scores = jnp.where(_tril(a.shape[-2]), scores, 0.0)
  return jnp.einsum('...ij,...je->...ie', scores, v)


def _exclusive(x, init, axis):
  """The inclusive prefix results x shifted by one along `axis`, `init` first."""
  first = jnp.broadcast_to(jnp.asarray(init, x.dtype), x.shape[:axis] + (1,) + x.shape[axis + 1:])
  return jnp.concatenate([first, lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)], axis=axis)


def _combine(first, second):
  """Online-softmax merge of two (max m, z = sum exp(k - m), S = sum exp(k - m) v) sums."""
  m1, z1, s1 = first
  m2, z2, s2 = second
  m = jnp.maximum(m1, m2)
  a1, a2 = jnp.exp(m1 - m), jnp.exp(m2 - m)  # <= 1
  return m, z1 * a1 + z2 * a2, s1 * a1[..., None] + s2 * a2[..., None]


def _causal_linear_parallel(qs, k, w, v):
  """Chunk-parallel causal linear attention on chunked, upcast inputs.

  qs, k [b, h, N, C, d] (padding: k = _NEG, w = 0), w [b, h, N, C, 1], v
  [b, h, N, C, e] -> (out [b, h, N, C, e], den [b, h, N, C, d]). For chunk c and
  position i in it, with M_c the running max of the keys up to the chunk's end
  (all exponents are shifted by M_c, so every term is <= 1):

    p_j      = w_j exp(k_j - M_c)                          (j in chunk c)
    (M', Z', S') = state of the chunks before c, from an exclusive associative
               scan of each chunk's (max, sum exp, sum exp·v) with `_combine`
    decay    = exp(M' - M_c)                                (<= 1)
    den_i    = decay Z' + sum_{j<=i in c} p_j               (per feature)
    out_i    = (qs_i / den_i) · (decay S') + sum_{j<=i in c} ((qs_i / den_i) · p_j) v_j

  The shift cancels between numerator and denominator, so out_i is exact up to
  rounding; it is the chunk's shift, not i's own prefix max, so the rounding
  can depend on later keys in i's chunk. Cost O(n·d·e + n·C·d) time, memory
  O(n·d + (n/C)·d·e) for the per-chunk states.
  """
  size = k.shape[-2]
  tril = _tril(size)
  m_chunk = lax.stop_gradient(jnp.max(k, axis=3))
  p = w * jnp.exp(k - m_chunk[..., None, :])
  sums = (m_chunk, jnp.sum(p, axis=3), jnp.einsum('bhncd,bhnce->bhnde', p, v))
  m_incl, _, _ = inclusive = lax.associative_scan(_combine, sums, axis=2)
  m_prev, z_prev, s_prev = (_exclusive(x, init, 2) for x, init in zip(inclusive, (_NEG, 0.0, 0.0)))
  decay = jnp.exp(m_prev - m_incl)
  p = p * jnp.exp(m_chunk - m_incl)[..., None, :]
  den = jnp.einsum('ij,bhnjd->bhnid', tril.astype(p.dtype), p) + (decay * z_prev)[..., None, :]
  qn = _safe_div(qs, den)
  out = (jnp.einsum('bhnid,bhnde->bhnie', qn * decay[..., None, :], s_prev)
         + _intra_chunk(qn, p, v))
  return out, den


def _causal_linear_scan(qs, k, w, v):
  """Exact causal linear attention, a lax.scan over chunks; same inputs as the parallel form.

  The carry is the running (max M, z, S); each chunk is shifted by M at its end
  and computed like one chunk of `_causal_linear_parallel`. A chunk where some
  position with a real key gets a denominator below exp(-_MAX_SHIFT) takes,
  under a per-chunk lax.cond, a pairwise C×C×d path that normalises each
  position by its own prefix max M_i (e[i, j] = exp(k_j - M_i) <= 1).
  Returns out [b, h, N, C, e].
  """
  size = k.shape[-2]
  tril = _tril(size)
  prefix_sum = functools.partial(jnp.einsum, 'ij,bhjd->bhid', tril.astype(k.dtype))
  b, h, _, _, d = k.shape
  init = (jnp.full((b, h, d), _NEG, k.dtype), jnp.zeros((b, h, d), k.dtype),
          jnp.zeros((b, h, d, v.shape[-1]), k.dtype))

  def body(carry, chunk):
    m_prev, z, s = carry
    qs, k, w, v = chunk
    m_c = lax.stop_gradient(jnp.maximum(m_prev, jnp.max(k, axis=2)))
    decay = jnp.exp(m_prev - m_c)
    p = w * jnp.exp(k - m_c[:, :, None])
    den = prefix_sum(p) + (decay * z)[:, :, None]
    has_key = (prefix_sum(w) > 0) | (z[:, :, None, :1] > 0)
    needs_exact = jnp.any(has_key & (den < math.exp(-_MAX_SHIFT)))

    def factorised():
      qn = _safe_div(qs, den)
      scores = jnp.einsum('bhid,bhjd->bhij', qn, p)
      return jnp.where(tril, scores, 0.0), qn * decay[:, :, None]

    def pairwise():
      big_m = lax.stop_gradient(jnp.maximum(m_prev[:, :, None], lax.cummax(k, axis=2)))
      carried = jnp.exp(m_prev[:, :, None] - big_m)
      # Masked with `where`, not clamped with `minimum`: k_j - M_i = 0 for the
      # key that is the max, a kink where `minimum` splits the gradient 50/50.
      e = w[:, :, None] * jnp.exp(
          jnp.where(tril[..., None], k[:, :, None] - big_m[:, :, :, None], _NEG))
      qn = _safe_div(qs, jnp.sum(e, axis=3) + carried * z[:, :, None])
      return jnp.einsum('bhid,bhijd->bhij', qn, e), qn * carried

    # Checkpointed, so that differentiating the cond does not save the unused
    # pairwise branch's C×C×d residuals (zeros) for every chunk.
    scores, q_carried = lax.cond(needs_exact, jax.checkpoint(pairwise), factorised)
    out = jnp.einsum('bhcd,bhde->bhce', q_carried, s) + jnp.einsum('bhij,bhje->bhie', scores, v)
    return (m_c, z * decay + jnp.sum(p, axis=2),
            s * decay[..., None] + jnp.einsum('bhjd,bhje->bhde', p, v)), out

  xs = tuple(jnp.moveaxis(x, 2, 0) for x in (qs, k, w, v))
  # Rematerialised body: the backward pass keeps only each chunk's inputs and carry.
  _, out = lax.scan(jax.checkpoint(body), init, xs)
  return jnp.moveaxis(out, 0, 2)


def _causal_linear(qs, k, mask, v, chunk_size):
  """Causal linear attention: [b, n, h, *] inputs (already upcast, k masked) -> [b, n, h, e].

  On CPU the exact scan (`_causal_linear_scan`), whose chunks stay in cache: on
  2 cores it beat the chunk-parallel form from n = 4096 to 65536, forward and
  backward (benchmarks/kernels.py --causal_ratio). Elsewhere the chunk-parallel
  form (`_causal_linear_parallel`), which has no sequential steps; if some
  position with a real key got a denominator below exp(-_MAX_SHIFT) (keys spread
  by more than _MAX_SHIFT nats within a chunk), one global lax.cond recomputes
  the call with the exact scan, checkpointed so that calls that never take it
  keep none of its residuals. Under vmap with a batched condition both run.
  """
  n = k.shape[1]
  chunks = (_to_chunks(qs, chunk_size), _to_chunks(k, chunk_size, constant_values=_NEG),
            _to_chunks(mask * jnp.ones_like(k[..., :1]), chunk_size), _to_chunks(v, chunk_size))

  def parallel(*chunks):
    out, den = _causal_linear_parallel(*chunks)
    # A real key at or before each position.
    has_key = _to_chunks((jnp.cumsum(mask[:, :, 0, 0], axis=1) > 0)[:, :, None, None], chunk_size)
    underflow = jnp.any(has_key & (den < math.exp(-_MAX_SHIFT)))
    return lax.cond(underflow, lambda out, *xs: jax.checkpoint(_causal_linear_scan)(*xs),
                    lambda out, *xs: out, out, *chunks)

  out = lax.platform_dependent(*chunks, cpu=_causal_linear_scan, default=parallel)
  return _from_chunks(out, n)


def _linear_sums(k, mask, v):
  """Whole-sequence (m, z, S) of the paper's attention, head-major: [b, h, d], [b, h, d], [b, h, d, e].

  m is each feature's max over the real keys (k already masked to _NEG), z = sum
  exp(k - m), S = sum exp(k - m) vᵀ: softmax_seq(K)ᵀ V = S / z.
  """
  m = lax.stop_gradient(jnp.max(k, axis=1, keepdims=True))
  # Both contractions head-major: XLA:CPU's dots are several times slower with the
  # heads axis between n and d (benchmarks/linear_variants.py); the transposes fuse
  # into the elementwise ops that produce their inputs.
  e = _heads_first(mask * jnp.exp(k - m))
  return m[:, 0], jnp.sum(e, axis=2), jnp.einsum('bhnd,bhne->bhde', e, _heads_first(v))


def _chunk_for(chunk_size, n):
  # A chunk longer than the sequence only adds padding.
  return max(1, min(int(chunk_size), n))


@functools.partial(jax.jit, static_argnames=('causal', 'chunk_size'))
def linear_attention(query, key, value, *, key_mask=None, causal=False, chunk_size=64):
  """The paper's linear attention: softmax_feat(Q) · (softmax_seq(K)ᵀ V).

  Non-causal: softmax_seq runs over the unmasked keys. Causal: query i uses the
  prefix j <= i, over chunks of `chunk_size`: a lax.scan on CPU, chunk-parallel
  elsewhere (`_causal_linear_parallel` has the algebra), exact also when keys
  spread by more than 40 nats within a chunk (see `_causal_linear`). Cost
  O(n·d·d_v) time (causal adds O(n·chunk·d)); memory O(n·d + d·d_v) (causal:
  O(n·d + (n/chunk)·d·d_v), the per-chunk states the backward pass keeps).
  """
  _check_inputs('linear_attention', query, key, value, key_mask, causal, chunk_size)
  empty = _empty_output(query, key, value)
  if empty is not None:
    return empty
  q, k, v = _upcast(query, key, value)
  qs = jax.nn.softmax(q, axis=-1)
  mask = _mask_as(key_mask, k)
  k = jnp.where(mask > 0, k, _NEG)
  if causal:
    return _causal_linear(qs, k, mask, v, _chunk_for(chunk_size, k.shape[1])).astype(query.dtype)
  _, z, s = _linear_sums(k, mask, v)
  kv = s / jnp.where(z > 0, z, 1.0)[..., None]
  return _heads_first(jnp.einsum('bhnd,bhde->bhne', _heads_first(qs), kv)).astype(query.dtype)


def _phi(x):
  return jax.nn.elu(x) + 1.0


def _causal_elu_parallel(phi_q, phi_k, v1):
  """Causal numerators phi(q_i)·sum_{j<=i} phi(k_j) v1_jᵀ on [b, h, N, C, *] chunks, all at once:
  each chunk's phi(k)ᵀ v1, an exclusive cumsum over chunks, plus the masked C×C term."""
  s_prev = _exclusive(jnp.cumsum(jnp.einsum('bhncd,bhnce->bhnde', phi_k, v1), axis=2), 0.0, 2)
  return jnp.einsum('bhncd,bhnde->bhnce', phi_q, s_prev) + _intra_chunk(phi_q, phi_k, v1)


def _causal_elu_scan(phi_q, phi_k, v1):
  """The same numerators by a lax.scan over chunks carrying sum phi(k) v1ᵀ (faster on CPU)."""
  b, h, _, _, d = phi_k.shape

  def body(s, chunk):
    a, kk, vv = chunk
    out = jnp.einsum('bhcd,bhde->bhce', a, s) + _intra_chunk(a, kk, vv)
    return s + jnp.einsum('bhjd,bhje->bhde', kk, vv), out

  xs = tuple(jnp.moveaxis(x, 2, 0) for x in (phi_q, phi_k, v1))
  _, out = lax.scan(jax.checkpoint(body), jnp.zeros((b, h, d, v1.shape[-1]), v1.dtype), xs)
  return jnp.moveaxis(out, 0, 2)


@functools.partial(jax.jit, static_argnames=('causal', 'chunk_size'))
def elu_linear_attention(query, key, value, *, key_mask=None, causal=False, chunk_size=64):
  """Kernelised linear attention of Katharopoulos et al. 2020, with phi = elu + 1.

    out_i = phi(q_i)ᵀ sum_j phi(k_j) v_jᵀ / phi(q_i)ᵀ sum_j phi(k_j)

  over unmasked j (and j <= i when causal: per chunk, phi(q_i) times the sum of
  the earlier chunks' phi(k) vᵀ plus a masked C×C term; a scan on CPU, an
  exclusive cumsum over chunks elsewhere).
  Cost O(n·d·d_v) time (causal adds O(n·chunk·d)), O(n·d + d·d_v) memory
  (causal: O(n·d + (n/chunk)·d·d_v)).
  """
  _check_inputs('elu_linear_attention', query, key, value, key_mask, causal, chunk_size)
  empty = _empty_output(query, key, value)
  if empty is not None:
    return empty
  q, k, v = _upcast(query, key, value)
  phi_q = _phi(q)
  phi_k = _phi(k) * _mask_as(key_mask, k)
  # A column of ones in V makes the denominator come out of the same sums.
  v1 = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)
  if causal:
    n = k.shape[1]
    chunks = tuple(_to_chunks(x, _chunk_for(chunk_size, n)) for x in (phi_q, phi_k, v1))
    num = _from_chunks(lax.platform_dependent(*chunks, cpu=_causal_elu_scan, default=_causal_elu_parallel), n)
  else:  # head-major, as in linear_attention
    phi_q, phi_k, v1 = _heads_first(phi_q), _heads_first(phi_k), _heads_first(v1)
    num = _heads_first(jnp.einsum('bhnd,bhde->bhne', phi_q, jnp.einsum('bhnd,bhne->bhde', phi_k, v1)))
  return _safe_div(num[..., :-1], num[..., -1:]).astype(query.dtype)


# --- Recurrent decoding: one token at a time, equal to the causal kernels ---

def _check_decode_kind(kind):
  if kind not in DECODE_KINDS:
    raise ValueError(f'no recurrent decoder for attention kind {kind!r}; valid: {DECODE_KINDS} '
                     '(linformer has no causal form)')


def decode_init(kind, batch, heads, head_dim, value_dim, *, max_len=None, dtype=jnp.float32):
  """The empty decoding state of `kind` (one of DECODE_KINDS), a dict of arrays.

  'linear': running per-feature max m [batch, heads, head_dim], z = sum exp(k - m)
  (same shape) and S = sum exp(k - m) vᵀ [batch, heads, head_dim, value_dim]:
  O(d·d_v) memory whatever the length. 'elu_linear': z = sum phi(k), S = sum
  phi(k) vᵀ. 'softmax': a KV cache of `max_len` slots (required), the real-key
  mask of each slot and the number of tokens so far: O(max_len·d) memory.
  """
  _check_decode_kind(kind)
  b, h, d, e = batch, heads, head_dim, value_dim
  if kind == 'softmax':
    if max_len is None or not _is_positive_int(max_len):
      raise ValueError(f"decode_init('softmax') needs max_len, a positive int (the KV cache's "
                       f'slots); got {max_len!r}')
    return {'key': jnp.zeros((b, max_len, h, d), dtype), 'value': jnp.zeros((b, max_len, h, e), dtype),
            'mask': jnp.zeros((b, max_len), bool), 'length': jnp.zeros((), jnp.int32)}
  state = {'z': jnp.zeros((b, h, d), dtype), 's': jnp.zeros((b, h, d, e), dtype)}
  if kind == 'linear':
    state['m'] = jnp.full((b, h, d), _NEG, dtype)
  return state


@functools.partial(jax.jit, static_argnames=('kind',))
def decode_step(kind, state, query, key, value, *, key_mask=None):
  """One causal step: (out [batch, heads, value_dim], new state).

  query, key [batch, heads, head_dim], value [batch, heads, value_dim] are the
  next position's; key_mask [batch] bool, False where this token is padding (its
  key and value add nothing). Feeding positions 0..n-1 in order gives the
  causal kernel's outputs (`attend(kind, ..., causal=True)`). Computes in the
  state's dtype, returns the query's. Cost per token: O(d·d_v) for the linear
  kinds, O(max_len·d) for 'softmax' (past max_len tokens its outputs are NaN).
  """
  _check_decode_kind(kind)
  b, h, d = query.shape
  if key.shape != (b, h, d) or value.shape[:2] != (b, h) or value.ndim != 3:
    raise ValueError(f'decode_step: query and key must be [batch, heads, head_dim] and value '
                     f'[batch, heads, value_dim]; got {query.shape}, {key.shape}, {value.shape}')
  if key_mask is not None and tuple(key_mask.shape) != (b,):
    raise ValueError(f'decode_step: key_mask must be [batch] = ({b},), got {tuple(key_mask.shape)}')
  dtype = state['key' if kind == 'softmax' else 's'].dtype
  q, k, v = (x.astype(dtype) for x in (query, key, value))
  real = jnp.ones((b,), bool) if key_mask is None else key_mask
  w = real.astype(dtype)[:, None, None]  # [b, 1, 1]
  if kind == 'softmax':
    pos = state['length']
    state = {'key': lax.dynamic_update_slice_in_dim(state['key'], k[:, None], pos, axis=1),
             'value': lax.dynamic_update_slice_in_dim(state['value'], v[:, None], pos, axis=1),
             'mask': lax.dynamic_update_slice_in_dim(state['mask'], real[:, None], pos, axis=1),
             'length': pos + 1}
    scores = jnp.einsum('bhd,blhd->bhl', q, state['key']) / math.sqrt(d)
    allowed = state['mask'][:, None, :]
    weights = jax.nn.softmax(jnp.where(allowed, scores, _NEG), axis=-1)
    weights = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), weights, 0.0)
    out = jnp.einsum('bhl,blhe->bhe', weights, state['value'])
    # The cache is full: the write above was clamped onto the last slot.
    out = jnp.where(pos < state['key'].shape[1], out, jnp.nan)
    return out.astype(query.dtype), state
  if kind == 'elu_linear':
    phi_k = _phi(k) * w
    z, s = state['z'] + phi_k, state['s'] + phi_k[..., None] * v[:, :, None, :]
    phi_q = _phi(q)
    out = _safe_div(jnp.einsum('bhd,bhde->bhe', phi_q, s), jnp.einsum('bhd,bhd->bh', phi_q, z)[..., None])
    return out.astype(query.dtype), {'z': z, 's': s}
  k = jnp.where(w > 0, k, _NEG)
  m = lax.stop_gradient(jnp.maximum(state['m'], k))
  decay, p = jnp.exp(state['m'] - m), w * jnp.exp(k - m)  # both <= 1
  z = state['z'] * decay + p
  s = state['s'] * decay[..., None] + p[..., None] * v[:, :, None, :]
  out = jnp.einsum('bhd,bhde->bhe', _safe_div(jax.nn.softmax(q, axis=-1), z), s)
  return out.astype(query.dtype), {'m': m, 'z': z, 's': s}


@functools.partial(jax.jit, static_argnames=('kind', 'max_len'))
def causal_state(kind, key, value, *, key_mask=None, max_len=None):
  """The decoding state after positions 0..n-1, computed in parallel (prefill).

  key [batch, n, heads, head_dim], value [batch, n, heads, value_dim] ->
  the state n `decode_step` calls from `decode_init` would give (to rounding),
  in float32 (float64 inputs: float64). Run `attend(kind, ..., causal=True)` on the
  prompt for its outputs, then `decode_step` from this state. 'softmax' needs
  max_len >= n (default n). Cost O(n·d·d_v) (softmax: O(max_len·d) copy).
  """
  _check_decode_kind(kind)
  if key.ndim != 4 or value.ndim != 4 or value.shape[:3] != key.shape[:3]:
    raise ValueError(f'causal_state: key and value must be [batch, n, heads, dim] with equal batch, '
                     f'n and heads; got {key.shape}, {value.shape}')
  b, n, h, d = key.shape
  if key_mask is not None and tuple(key_mask.shape) != (b, n):
    raise ValueError(f'causal_state: key_mask shape {tuple(key_mask.shape)} must be [batch, n] = {(b, n)}')
  k, v = _upcast(key, value)
  mask = _mask_as(key_mask, k)
  if kind == 'softmax':
    max_len = n if max_len is None else max_len
    if not _is_positive_int(max_len) or max_len < n:
      raise ValueError(f'causal_state: max_len must be an int >= n = {n}, got {max_len!r}')
    state = decode_init(kind, b, h, d, v.shape[-1], max_len=max_len, dtype=k.dtype)
    real = jnp.ones((b, n), bool) if key_mask is None else key_mask.astype(bool)
    return {'key': state['key'].at[:, :n].set(k), 'value': state['value'].at[:, :n].set(v),
            'mask': state['mask'].at[:, :n].set(real), 'length': jnp.asarray(n, jnp.int32)}
  if n == 0:
    return decode_init(kind, b, h, d, v.shape[-1], dtype=k.dtype)
  if kind == 'elu_linear':
    phi_k = _heads_first(_phi(k) * mask)
    return {'z': jnp.sum(phi_k, axis=2), 's': jnp.einsum('bhnd,bhne->bhde', phi_k, _heads_first(v))}
  m, z, s = _linear_sums(jnp.where(mask > 0, k, _NEG), mask, v)
  return {'m': m, 'z': z, 's': s}


# --- One entry point by name ---

def attend(kind, query, key, value, *, key_mask=None, causal=False, chunk_size=64, projections=None):
  """The kernel named `kind` (one of KINDS) on [batch, n, heads, d] inputs.

  `projections` = (e_proj, f_proj) for 'linformer' only (see
  `linformer_attention`); `chunk_size` applies to the causal linear kernels.
  Raises ValueError for an unknown kind, a causal Linformer or missing or
  misplaced projections.
  """
  if kind not in KINDS:
    raise ValueError(f'unknown attention kind {kind!r}; valid: {KINDS}')
  if kind == 'linformer':
    if causal:
      raise ValueError("'linformer' attention has no causal form; use one of "
                       f'{DECODE_KINDS} for causal attention')
    if projections is None or len(projections) != 2:
      raise ValueError("'linformer' attention needs projections=(e_proj, f_proj), each [k, max_len] "
                       f'or [heads, k, max_len]; got {projections!r}')
    return linformer_attention(query, key, value, *projections, key_mask=key_mask)
  if projections is not None:
    raise ValueError(f'projections are for linformer attention only, not {kind!r}')
  if kind == 'softmax':
    return softmax_attention(query, key, value, key_mask=key_mask, causal=causal)
  fn = linear_attention if kind == 'linear' else elu_linear_attention
  return fn(query, key, value, key_mask=key_mask, causal=causal, chunk_size=chunk_size)


def flax_attention_fn(kind, *, causal=False, e_proj=None, f_proj=None, chunk_size=64):
  """An `attention_fn=` for `flax.linen.MultiHeadDotProductAttention`.

  kind: one of KINDS. Linformer needs its projections; Flax's module has no
  place to learn them, so pass fixed `e_proj`/`f_proj` arrays here (or use
  `linformer_jax.MultiHeadAttention`, which learns them). The returned function
  accepts no mask or a key-padding mask broadcastable over the heads and query
  axes ([batch, 1, 1, kv_len]); any other mask (causal, query-dependent) raises
  ValueError: use `causal=True` for causal attention. Attention-weight dropout
  is not supported (the linear kernels never form the weights).
  """
  if kind not in KINDS:
    raise ValueError(f'unknown attention kind {kind!r}; valid: {KINDS}')
  projections = None
  if kind == 'linformer':
    if e_proj is None or f_proj is None:
      raise ValueError("flax_attention_fn('linformer') needs e_proj and f_proj arrays "
                       '([k, max_len]): Linformer projections are parameters that '
                       'flax.linen.MultiHeadDotProductAttention cannot create; use '
                       'linformer_jax.MultiHeadAttention to learn them')
    if causal:
      raise ValueError('linformer attention has no causal form')
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
                  projections=projections)

  return attention_fn
