"""Naive references: every kind written out with its explicit [batch, q, kv] weights.

O(n²) time and memory (the paper's attention: O(n²·d), one softmax over keys per
query and feature), no chunks, no running maxima, no shared code with the
kernels: what the kernels are tested against, in float64, and what
benchmarks/precision.py measures their error from. Differentiable, so
gradients are checked against them too. Each is fn(q, k, v, mask=None,
causal=False[, projections]), mask [batch, kv_len] bool (None: every key real);
each kind's record (`attention.TABLE[name].naive`) names its own.
"""
import jax
import jax.numpy as jnp


def allowed(mask, causal, q_len, kv_len):
  """allowed[b, i, j]: may query i look at key j."""
  allowed = jnp.ones((1, q_len, kv_len), bool) if mask is None else mask[:, None, :]
  allowed = jnp.broadcast_to(allowed, allowed.shape[:1] + (q_len, kv_len))
  return allowed & jnp.tril(jnp.ones((q_len, kv_len), bool))[None] if causal else allowed


def masked_softmax(logits, allowed, axis):
  """Softmax over `axis` of the allowed entries; rows with none allowed give 0 (finite gradients)."""
  w = jax.nn.softmax(jnp.where(allowed, logits, -1e300 if logits.dtype == jnp.float64 else -1e30),
                     axis=axis)
  return jnp.where(jnp.any(allowed, axis=axis, keepdims=True), w, 0.0)


def linear(q, k, v, mask=None, causal=False):
  """out_i = sum_f softmax_feat(q_i)_f sum_{allowed j} softmax_j(k_jf) v_j."""
  b, n, h, d = k.shape
  ok = allowed(mask, causal, q.shape[1], n)[:, None, :, :, None]  # [b, 1, i, j, 1]
  logits = jnp.einsum('bjhf->bhjf', k)[:, :, None]  # [b, h, 1, j, f]
  logits = jnp.broadcast_to(logits, (b, h, q.shape[1], n, d))
  weights = masked_softmax(logits, ok, 3)
  return jnp.einsum('bihf,bhijf,bjhe->bihe', jax.nn.softmax(q, axis=-1), weights, v)


def elu_linear(q, k, v, mask=None, causal=False):
  """out_i = sum_j phi(q_i)·phi(k_j) v_j / sum_j phi(q_i)·phi(k_j), phi = elu + 1."""
  phi = lambda x: jnp.where(x > 0, x + 1, jnp.exp(jnp.minimum(x, 0)))
  s = jnp.einsum('bihd,bjhd->bhij', phi(q), phi(k))
  s = s * allowed(mask, causal, q.shape[1], k.shape[1])[:, None]
  den = s.sum(-1, keepdims=True)
  return jnp.einsum('bhij,bjhe->bihe', s / jnp.where(den > 0, den, 1.0), v)


def softmax(q, k, v, mask=None, causal=False, window=None):
  """Exact softmax attention; with `window`, over keys j with i - window < j <= i
  (causal) or |i - j| < window (bidirectional) only."""
  s = jnp.einsum('bihd,bjhd->bhij', q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  ok = allowed(mask, causal, q.shape[1], k.shape[1])
  if window is not None:
    offset = jnp.arange(q.shape[1])[:, None] - jnp.arange(k.shape[1])[None]
    ok = ok & (offset < window if causal else jnp.abs(offset) < window)[None]
  weights = masked_softmax(s, ok[:, None], 3)
  return jnp.einsum('bhij,bjhe->bihe', weights, v)


def window(q, k, v, mask=None, causal=False, window=64):  # pylint: disable=redefined-outer-name
  """Sliding-window softmax attention (see `softmax`)."""
  return softmax(q, k, v, mask, causal, window)


def linear_window(q, k, v, mask=None, causal=False, window=64, gate=None):  # pylint: disable=redefined-outer-name
  """g·window + (1 − g)·linear per head, g = sigmoid(gate) ([heads] logits; None: zeros, g = 0.5)."""
  gate = jnp.zeros((q.shape[2],), q.dtype) if gate is None else gate
  g = jax.nn.sigmoid(gate)[:, None]
  return (g * softmax(q, k, v, mask, causal, window) +
          (1 - g) * linear(q, k, v, mask, causal))


def linformer(q, k, v, mask=None, causal=False, projections=None):
  """softmax(Q (E K)ᵀ / sqrt(d)) (F V), padded keys and values zeroed first; [k, n] projections."""
  assert not causal, 'linformer has no causal form'
  e_proj, f_proj = projections
  n = k.shape[1]
  w = (jnp.ones(k.shape[:2], k.dtype) if mask is None else mask.astype(k.dtype))[:, :, None, None]
  ek = jnp.einsum('rn,bnhd->brhd', e_proj[:, :n], k * w)
  fv = jnp.einsum('rn,bnhd->brhd', f_proj[:, :n], v * w)
  out = softmax(q, ek, fv)
  return out if mask is None else out * jnp.any(mask, axis=1)[:, None, None, None]
