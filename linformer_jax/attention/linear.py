"""The paper's attention (Verma 2021, arXiv:2101.10277), per head:

    out = softmax_feat(Q) · (softmax_seq(K)ᵀ · V)

softmax_feat normalises each query row over its d features, softmax_seq each key
feature column over the (unmasked; when causal, the j <= i prefix) positions.
No 1/sqrt(d) scaling. Kᵀ V is formed first: O(n·d·d_v) time, O(n·d + d·d_v)
memory, and no n×n (or n×k) array ever exists.

Causal implementations (`implementation=`), all exact at any key spread:
  'scan'     a lax.scan over chunks carrying the running (max M, z, S); a chunk
             whose shifted denominators underflow takes a pairwise C×C×d path
             that shifts each position by its own prefix max. CPU's default.
  'chunked'  every chunk at once, the states before each chunk by an
             associative scan; if any denominator underflowed, the whole call
             is recomputed token by token (`_recurrent`, exact, one small
             loop to compile). The default elsewhere.
  'pallas'   a fused Pallas (Triton) kernel for GPUs (pallas_linear.py): one
             program per (batch, head) walks the chunks; the kernel flags an
             underflowed denominator and the call is then recomputed token by token.
             On CPU it runs in Pallas interpret mode (slow; for tests).
             float32 and bf16 only. Not yet measured on a GPU, so not a default.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from linformer_jax.attention import common
from linformer_jax.attention.common import NEG, TINY

IMPLEMENTATIONS = ('scan', 'chunked', 'pallas')


def _combine(first, second):
  """Online-softmax merge of two (max m, z = sum exp(k - m), S = sum exp(k - m) v) sums."""
  m1, z1, s1 = first
  m2, z2, s2 = second
  m = jnp.maximum(m1, m2)
  a1, a2 = jnp.exp(m1 - m), jnp.exp(m2 - m)  # <= 1
  return m, z1 * a1 + z2 * a2, s1 * a1[..., None] + s2 * a2[..., None]


def _chunked(num, qs, k, w, v, init):
  """Chunk-parallel causal attention on chunked inputs.

  qs, k [b, h, N, C, d] (padding: k = NEG, w = 0), w [b, h, N, C, 1], v
  [b, h, N, C, e] -> (out [b, h, N, C, e], den [b, h, N, C, d]). For chunk c and
  position i in it, with M_c the running max of the keys up to the chunk's end
  (every exponent is shifted by M_c, so every term is <= 1):

    p_j      = w_j exp(k_j - M_c)                          (j in chunk c)
    (M', Z', S') = state of the chunks before c, from an exclusive associative
               scan of each chunk's (max, sum exp, sum exp·v) with `_combine`
    decay    = exp(M' - M_c)                                (<= 1)
    den_i    = decay Z' + sum_{j<=i in c} p_j               (per feature)
    out_i    = (qs_i / den_i) · (decay S') + sum_{j<=i in c} ((qs_i / den_i) · p_j) v_j

  The shift cancels between numerator and denominator, so out_i is exact up to
  rounding unless den_i underflows (the caller checks den). `init` = (M, z, S)
  [b, h, d], [b, h, d], [b, h, d, e] is the state before the first chunk. The division uses
  max(den, e^-40): where den underflowed the result is wrong but finite, and so
  is its gradient, which matters because the caller may discard it (a zero
  cotangent times an infinite partial derivative would be NaN). Cost
  O(n·d·e + n·C·d) time, O(n·d + (n/C)·d·e) memory.
  """
  m_chunk = lax.stop_gradient(jnp.max(k, axis=3))
  p = w * jnp.exp(k - m_chunk[..., None, :])
  sums = (m_chunk, jnp.sum(p, axis=3), num.einsum('bhncd,bhnce->bhnde', p, v))
  inclusive = lax.associative_scan(_combine, sums, axis=2)
  # The state before the first chunk (empty, or an initial state) comes first.
  inclusive = _combine(tuple(jnp.expand_dims(x, 2) for x in init), inclusive)
  m_incl = inclusive[0]
  m_prev, z_prev, s_prev = (common.exclusive(x, jnp.expand_dims(x0, 2), 2)
                            for x, x0 in zip(inclusive, init))
  decay = jnp.exp(m_prev - m_incl)
  p = p * jnp.exp(m_chunk - m_incl)[..., None, :]
  den = jnp.cumsum(p, axis=3) + (decay * z_prev)[..., None, :]
  qn = qs / jnp.maximum(den, TINY)
  out = (num.einsum('bhnid,bhnde->bhnie', qn * decay[..., None, :], s_prev)
         + common.intra_chunk(num, qn, p, v))
  return out, den


def _scan(num, qs, k, w, v, init):
  """Exact causal attention, a lax.scan over chunks; same inputs as `_chunked`.

  The carry is the running (max M, z, S); each chunk is shifted by M at its end
  and computed like one chunk of `_chunked`. A chunk where some position with a
  real key gets a denominator below e^-40 takes, under a per-chunk lax.cond, a
  pairwise C×C×d path that normalises each position by its own prefix max M_i
  (e[i, j] = exp(k_j - M_i) <= 1, and the max key itself gives 1, so the
  denominator is >= 1). Both branches are finite, also when vmap turns the cond
  into a select that evaluates both. Returns out [b, h, N, C, e].
  """
  tril = common.tril(k.shape[-2])

  def body(carry, chunk):
    m_prev, z, s = carry
    qs, k, w, v = chunk
    m_c = lax.stop_gradient(jnp.maximum(m_prev, jnp.max(k, axis=2)))
    decay = jnp.exp(m_prev - m_c)
    p = w * jnp.exp(k - m_c[:, :, None])
    den = jnp.cumsum(p, axis=2) + (decay * z)[:, :, None]
    # z >= 1 once a real key was seen (the max key contributes exp(0)).
    has_key = (jnp.cumsum(w, axis=2) > 0) | (z[:, :, None, :1] > 0)
    needs_exact = jnp.any(has_key & (den < TINY))

    def factorised():
      qn = qs / jnp.maximum(den, TINY)
      scores = num.einsum('bhid,bhjd->bhij', qn, p)
      return jnp.where(tril, scores, 0.0), qn * decay[:, :, None]

    def pairwise():
      big_m = lax.stop_gradient(jnp.maximum(m_prev[:, :, None], lax.cummax(k, axis=2)))
      carried = jnp.exp(m_prev[:, :, None] - big_m)
      # Masked with `where`, not clamped with `minimum`: k_j - M_i = 0 for the
      # key that is the max, a kink where `minimum` splits the gradient 50/50.
      e = w[:, :, None] * jnp.exp(
          jnp.where(tril[..., None], k[:, :, None] - big_m[:, :, :, None], NEG))
      qn = common.safe_div(qs, jnp.sum(e, axis=3) + carried * z[:, :, None])
      return num.einsum('bhid,bhijd->bhij', qn, e), qn * carried

    # Checkpointed, so that differentiating the cond does not save the unused
    # pairwise branch's C×C×d residuals (zeros) for every chunk.
    scores, q_carried = lax.cond(needs_exact, jax.checkpoint(pairwise), factorised)
    out = num.einsum('bhcd,bhde->bhce', q_carried, s) + num.einsum('bhij,bhje->bhie', scores, v)
    return (m_c, z * decay + jnp.sum(p, axis=2),
            s * decay[..., None] + num.einsum('bhjd,bhje->bhde', p, v)), out

  return common.scan_chunks(body, init, qs, k, w, v)


def _recurrent(num, qs, k, w, v, init):
  """Exact causal attention token by token, the recurrence `decode_step` runs;
  same chunked inputs as `_chunked`. The fallback of 'chunked' and 'pallas'.

  Each position is shifted by its own running max, so once a real key has been
  seen its denominator is >= 1 (the max key contributes exp(0)): exact at any
  key spread with no C×C×d array and no branch, so it compiles to one small
  loop. A lax.scan over tokens inside a rematerialised scan over chunks: the
  backward pass keeps each chunk's carry, and one chunk's per-token states
  while it recomputes that chunk. O(n·d·e) work in n sequential steps.
  """
  def chunk_body(carry, chunk):
    def token(carry, x):
      m, z, s = carry
      q, k, w, v = x
      m_new = lax.stop_gradient(jnp.maximum(m, k))
      decay, p = jnp.exp(m - m_new), w * jnp.exp(k - m_new)  # both <= 1
      z = z * decay + p
      s = s * decay[..., None] + p[..., None] * v[..., None, :]
      return (m_new, z, s), num.einsum('bhd,bhde->bhe', common.safe_div(q, z), s)
    carry, out = lax.scan(token, carry, tuple(jnp.moveaxis(x, 2, 0) for x in chunk))
    return carry, jnp.moveaxis(out, 0, 2)

  return common.scan_chunks(chunk_body, init, qs, k, w, v)


def _causal(num, qs, k, mask, v, chunk_size, implementation, init):
  """Causal attention on [b, n, h, *] inputs (qs, k in num.acc, k masked to NEG) -> [b, n, h, e],
  from the state `init` = (m, z, S) of earlier positions.

  'chunked' and 'pallas' check every position that has a real key for a
  denominator below e^-40 and, if any, recompute the call with `_recurrent` under one
  lax.cond (checkpointed, so calls that never take it keep none of its
  residuals). Their own results stay finite where they underflow, so the
  discarded branch's zero cotangent gives zero gradients, not 0 * inf = NaN.
  """
  n = k.shape[1]

  def chunks_of(qs, k, mask, v, size=chunk_size):
    return (common.to_chunks(qs, size),
            common.to_chunks(k, size, constant_values=NEG),
            common.to_chunks(mask * jnp.ones_like(k[..., :1]), size),
            common.to_chunks(v, size))

  def scan(*xs):
    return common.from_chunks(_scan(num, *chunks_of(*xs), init), n)

  def recurrent(*xs):
    # Chunks of 16 bound the per-token states one chunk's backward pass keeps.
    return common.from_chunks(_recurrent(num, *chunks_of(*xs, size=min(16, n)), init), n)

  def exact_if(underflow, out, *xs):
    return lax.cond(underflow, lambda out, *xs: jax.checkpoint(recurrent)(*xs),
                    lambda out, *xs: out, out, *xs)

  def chunked(*xs):
    out, den = _chunked(num, *chunks_of(*xs), init)
    has_key = common.to_chunks((jnp.cumsum(mask[:, :, 0, 0], axis=1) > 0)[:, :, None, None],
                               chunk_size) | (init[1][:, :, None, None, :1] > 0)
    return exact_if(jnp.any(has_key & (den < TINY)), common.from_chunks(out, n), *xs)

  def pallas(qs, k, mask, v):
    if num.acc != jnp.float32:
      raise ValueError("linear_attention: implementation='pallas' computes in float32 (bf16 "
                       f"operands allowed); got {num.acc} inputs: use 'scan' or 'chunked'")
    from linformer_jax.attention import pallas_linear  # pylint: disable=g-import-not-at-top
    interpret = jax.default_backend() == 'cpu'
    # Triton's matmuls need 16 rows at least; the chunk length changes no result.
    chunk = chunk_size if interpret else max(chunk_size, 16)
    out, underflow = pallas_linear.causal_linear(
        qs.astype(num.operand), k, mask[:, :, 0, 0], v.astype(num.operand), chunk_size=chunk,
        initial_state=init, precision=num.precision, interpret=interpret)
    return exact_if(underflow, out, qs, k, mask, v)

  return common.by_platform(implementation, (qs, k, mask, v),
                            {'scan': scan, 'chunked': chunked, 'pallas': pallas},
                            cpu='scan', default='chunked')


def linear_sums(num, k, mask, v):
  """Whole-sequence (m, z, S), head-major: [b, h, d], [b, h, d], [b, h, d, e].

  m is each feature's max over the real keys (k already masked to NEG), z = sum
  exp(k - m), S = sum exp(k - m) vᵀ: softmax_seq(K)ᵀ V = S / z.
  """
  m = lax.stop_gradient(jnp.max(k, axis=1, keepdims=True))
  # Both contractions head-major: XLA:CPU's dots are several times slower with the
  # heads axis between n and d; the transposes fuse into the elementwise ops that
  # produce their inputs.
  e = common.heads_first(mask * jnp.exp(k - m))
  return m[:, 0], jnp.sum(e, axis=2), num.einsum('bhnd,bhne->bhde', e, common.heads_first(v))


@functools.partial(jax.jit, static_argnames=('causal', 'chunk_size', 'implementation', 'precision'))
def linear_attention(query, key, value, *, key_mask=None, causal=False, chunk_size=64,
                     implementation=None, precision=None, initial_state=None):
  """The paper's linear attention: softmax_feat(Q) · (softmax_seq(K)ᵀ V).

  Non-causal: softmax_seq runs over the unmasked keys. Causal: query i uses the
  prefix j <= i, over chunks of `chunk_size`; `implementation` (causal only):
  None (the best for the backend: 'scan' on CPU, 'chunked' elsewhere), 'scan',
  'chunked' or 'pallas' (see the module docstring); every one is exact at any
  key spread. `precision` goes to every matmul (see `attention.common`).
  `initial_state` (causal only): the decoding state of earlier positions
  ({'m', 'z', 's'}, as `causal_state` or `decode_step` give it), so that a
  sequence can be processed in segments (or split over devices) exactly;
  differentiable. Cost
  O(n·d·d_v) time (causal adds O(n·chunk·d)); memory O(n·d + d·d_v) (causal:
  O(n·d + (n/chunk)·d·d_v), the per-chunk states the backward pass keeps).
  """
  common.check_inputs('linear_attention', query, key, value, key_mask, causal, chunk_size)
  common.check_implementation('linear_attention', implementation, IMPLEMENTATIONS)
  empty = common.empty_output(query, key, value)
  if empty is not None:
    return empty
  num = common.numerics(query, key, value, precision=precision)
  q, k = query.astype(num.acc), key.astype(num.acc)
  qs = jax.nn.softmax(q, axis=-1)
  mask = common.mask_as(key_mask, k)
  k = jnp.where(mask > 0, k, NEG)
  if causal:
    chunk = common.chunk_for(chunk_size, k.shape[1])
    b, _, h, d = k.shape
    init = decode_init(b, h, d, value.shape[-1], dtype=num.acc)
    if initial_state is not None:
      init = {name: initial_state[name].astype(num.acc) for name in init}
    init = (init['m'], init['z'], init['s'])
    return _causal(num, qs, k, mask, value, chunk, implementation, init).astype(query.dtype)
  if initial_state is not None:
    raise ValueError('linear_attention: initial_state needs causal=True')
  _, z, s = linear_sums(num, k, mask, value)
  kv = s / jnp.where(z > 0, z, 1.0)[..., None]
  out = num.einsum('bhnd,bhde->bhne', common.heads_first(qs), kv)
  return common.heads_first(out).astype(query.dtype)


# --- Recurrent decoding ---

def decode_init(batch, heads, head_dim, value_dim, *, dtype, max_len=None):
  """Running per-feature max m [b, h, d], z = sum exp(k - m) (same shape) and
  S = sum exp(k - m) vᵀ [b, h, d, e]: O(d·d_v) whatever the length."""
  del max_len
  b, h, d, e = batch, heads, head_dim, value_dim
  return {'m': jnp.full((b, h, d), NEG, dtype), 'z': jnp.zeros((b, h, d), dtype),
          's': jnp.zeros((b, h, d, e), dtype)}


def decode_step(state, q, k, v, w, *, precision=None):
  """One token: q, k [b, h, d], v [b, h, e] in the state's dtype, w [b, 1, 1] (0: padding)."""
  k = jnp.where(w > 0, k, NEG)
  m = lax.stop_gradient(jnp.maximum(state['m'], k))
  decay, p = jnp.exp(state['m'] - m), w * jnp.exp(k - m)  # both <= 1
  z = state['z'] * decay + p
  s = state['s'] * decay[..., None] + p[..., None] * v[:, :, None, :]
  out = jnp.einsum('bhd,bhde->bhe', common.safe_div(jax.nn.softmax(q, axis=-1), z), s,
                   precision=precision)
  return out, {'m': m, 'z': z, 's': s}


def prefill(k, v, mask, *, max_len=None, precision=None):
  """The state after k, v [b, n, h, *] (computed in parallel); mask [b, n, 1, 1]."""
  del max_len
  num = common.numerics(k, v, precision=precision)
  m, z, s = linear_sums(num, jnp.where(mask > 0, k, NEG), mask, v)
  return {'m': m, 'z': z, 's': s}


# Matmul FLOPs of one forward call (2 per multiply-add), as benchmarks count them.
FLOP_FORMULA = {False: '4·b·h·n·d²  (Kᵀ·V, then Q·(KᵀV))',
                True: '4·b·h·n·(d² + C·d)  (per chunk: Q·Kᵀ and P·V in C×C, K·V and Q·S in d×d)'}


def flops(b, n, h, d, *, causal=False, chunk=64, **_):
  return 4 * b * h * n * (d * d + (chunk * d if causal else 0))
