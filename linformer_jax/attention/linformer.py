"""Linformer attention (Wang et al. 2020): keys and values projected to k rows.

    out = softmax(Q (E K)ᵀ / sqrt(d)) (F V)

No causal form; inputs are bounded by the projections' max_len.
"""
import functools

import jax
import jax.numpy as jnp

from linformer_jax.attention import common
from linformer_jax.attention import softmax


@functools.partial(jax.jit, static_argnames=('precision',))
def linformer_attention(query, key, value, e_proj, f_proj, *, key_mask=None, precision=None):
  """Linformer attention: softmax(Q (E K)ᵀ / sqrt(d)) (F V).

  Args:
    e_proj, f_proj: [k, max_len] projections shared by all heads, or
      [heads, k, max_len] one per head; E and F must have the same k. A
      length-n input uses the first n columns, so any n <= max_len works.
    precision: for every matmul (see `attention.common`).
  Padded keys and values are zeroed before projecting, so they influence
  nothing. Cost O(n·k·d) time, O(n·d + n·k) memory (the query-by-k scores).
  """
  common.check_inputs('linformer_attention', query, key, value, key_mask)
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
  empty = common.empty_output(query, key, value)
  if empty is not None:
    return empty
  num = common.numerics(query, key, value, precision=precision)
  mask = common.mask_as(key_mask, key, num.acc)

  def project(p, x):
    p = p[..., :n]
    spec = 'rn,bnhd->brhd' if p.ndim == 2 else 'hrn,bnhd->brhd'
    return num.einsum(spec, p, x.astype(num.acc) * mask).astype(num.operand)

  out = softmax.softmax_attention(query.astype(num.operand), project(e_proj, key),
                                  project(f_proj, value), implementation='xla', precision=precision)
  if key_mask is not None:
    out = out * jnp.any(key_mask, axis=1)[:, None, None, None]
  return out.astype(query.dtype)


# Matmul FLOPs of one forward call (2 per multiply-add), as benchmarks count them.
FLOP_FORMULA = {False: '8·b·h·n·k·d  (E·K and F·V, then Q against k rows and P·V)'}


def flops(b, n, h, d, *, rows=128, **_):
  return 8 * b * h * n * rows * d
