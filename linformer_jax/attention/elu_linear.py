"""Kernelised linear attention of Katharopoulos et al. 2020 (phi = elu + 1), a baseline:

    out_i = phi(q_i)ᵀ sum_j phi(k_j) v_jᵀ / phi(q_i)ᵀ sum_j phi(k_j)

over unmasked j (and j <= i when causal). A column of ones appended to V makes
the denominator come out of the same sums. Causal implementations: 'scan' (a
lax.scan over chunks carrying sum phi(k) v1ᵀ; CPU's default) and 'chunked'
(each chunk's phi(k)ᵀ v1, an exclusive cumsum over chunks, plus the masked C×C
term; the default elsewhere). No exponentials of keys, so no underflow path.
"""
import functools

import jax
import jax.numpy as jnp

from linformer_jax.attention import common

IMPLEMENTATIONS = ('scan', 'chunked')


def phi(x):
  return jax.nn.elu(x) + 1.0


def _chunked(num, phi_q, phi_k, v1, s0):
  """Causal numerators phi(q_i)·(s0 + sum_{j<=i} phi(k_j) v1_jᵀ) on [b, h, N, C, *] chunks, all at once."""
  s_prev = common.exclusive(jnp.cumsum(num.einsum('bhncd,bhnce->bhnde', phi_k, v1), axis=2), 0.0, 2)
  s_prev = s_prev + s0[:, :, None]
  return num.einsum('bhncd,bhnde->bhnce', phi_q, s_prev) + common.intra_chunk(num, phi_q, phi_k, v1)


def _scan(num, phi_q, phi_k, v1, s0):
  """The same numerators by a lax.scan over chunks carrying sum phi(k) v1ᵀ."""
  def body(s, chunk):
    a, kk, vv = chunk
    out = num.einsum('bhcd,bhde->bhce', a, s) + common.intra_chunk(num, a, kk, vv)
    return s + num.einsum('bhjd,bhje->bhde', kk, vv), out

  return common.scan_chunks(body, s0, phi_q, phi_k, v1)


@functools.partial(jax.jit, static_argnames=('causal', 'chunk_size', 'implementation', 'precision'))
def elu_linear_attention(query, key, value, *, key_mask=None, causal=False, chunk_size=64,
                         implementation=None, precision=None, initial_state=None):
  """Kernelised linear attention, phi = elu + 1 (see the module docstring).

  `implementation` (causal only): None (the best for the backend), 'scan' or
  'chunked'. `initial_state` (causal only): the decoding state {'z', 's'} of
  earlier positions. Cost O(n·d·d_v) time (causal adds O(n·chunk·d)), O(n·d + d·d_v)
  memory (causal: O(n·d + (n/chunk)·d·d_v)).
  """
  common.check_inputs('elu_linear_attention', query, key, value, key_mask, causal, chunk_size)
  common.check_implementation('elu_linear_attention', implementation, IMPLEMENTATIONS)
  empty = common.empty_output(query, key, value)
  if empty is not None:
    return empty
  num = common.numerics(query, key, value, precision=precision)
  q, k, v = (x.astype(num.acc) for x in (query, key, value))
  phi_q = phi(q)
  phi_k = phi(k) * common.mask_as(key_mask, k)
  v1 = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)
  if causal:
    n = k.shape[1]
    chunk = common.chunk_for(chunk_size, n)
    chunks = tuple(common.to_chunks(x, chunk) for x in (phi_q, phi_k, v1))
    b, _, h, d = k.shape
    state = initial_state or decode_init(b, h, d, v.shape[-1], dtype=num.acc)
    # sum phi(k) v1ᵀ: S beside z (the ones column's sums).
    s0 = jnp.concatenate([state['s'], state['z'][..., None]], axis=-1).astype(num.acc)
    impls = {'scan': functools.partial(_scan, num, s0=s0),
             'chunked': functools.partial(_chunked, num, s0=s0)}
    out = common.by_platform(implementation, chunks, impls, cpu='scan', default='chunked')
    out = common.from_chunks(out, n)
  else:  # head-major, as in linear_attention
    if initial_state is not None:
      raise ValueError('elu_linear_attention: initial_state needs causal=True')
    phi_q, phi_k, v1 = (common.heads_first(x) for x in (phi_q, phi_k, v1))
    out = common.heads_first(num.einsum('bhnd,bhde->bhne', phi_q,
                                        num.einsum('bhnd,bhne->bhde', phi_k, v1)))
  return common.safe_div(out[..., :-1], out[..., -1:]).astype(query.dtype)


# --- Recurrent decoding ---

def decode_init(batch, heads, head_dim, value_dim, *, dtype, max_len=None):
  """z = sum phi(k) [b, h, d] and S = sum phi(k) vᵀ [b, h, d, e]."""
  del max_len
  return {'z': jnp.zeros((batch, heads, head_dim), dtype),
          's': jnp.zeros((batch, heads, head_dim, value_dim), dtype)}


def decode_step(state, q, k, v, w, *, precision=None):
  """One token: q, k [b, h, d], v [b, h, e] in the state's dtype, w [b, 1, 1] (0: padding)."""
  phi_k = phi(k) * w
  z, s = state['z'] + phi_k, state['s'] + phi_k[..., None] * v[:, :, None, :]
  phi_q = phi(q)
  out = common.safe_div(jnp.einsum('bhd,bhde->bhe', phi_q, s, precision=precision),
                        jnp.einsum('bhd,bhd->bh', phi_q, z, precision=precision)[..., None])
  return out, {'z': z, 's': s}


def prefill(k, v, mask, *, max_len=None, precision=None):
  """The state after k, v [b, n, h, *]; mask [b, n, 1, 1]."""
  del max_len
  phi_k = common.heads_first(phi(k) * mask)
  return {'z': jnp.sum(phi_k, axis=2),
          's': jnp.einsum('bhnd,bhne->bhde', phi_k, common.heads_first(v), precision=precision)}


# Matmul FLOPs of one forward call (2 per multiply-add), as benchmarks count them.
FLOP_FORMULA = {False: '4·b·h·n·d·(d+1)  (V carries a ones column for the denominator)',
                True: '2·b·h·n·(C·d + C·(d+1) + 2·d·(d+1))'}


def flops(b, n, h, d, *, causal=False, chunk=64, **_):
  if causal:
    return 2 * b * h * n * (chunk * d + chunk * (d + 1) + 2 * d * (d + 1))
  return 4 * b * h * n * d * (d + 1)
