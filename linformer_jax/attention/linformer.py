"""Linformer attention (Wang et al. 2020): keys and values projected to k rows.

    out = softmax(Q (E K)ᵀ / sqrt(d)) (F V)

No causal form; inputs are bounded by the projections' max_len.
"""
import functools

import jax
import jax.numpy as jnp

from linformer_jax.attention import common
from linformer_jax.attention import softmax


def check_projections(name, n, heads, e_proj, f_proj):
  """Raises ValueError unless E and F fit a length-n input of `heads` heads."""
  for arg, p in (('e_proj', e_proj), ('f_proj', f_proj)):
    if p.ndim not in (2, 3) or (p.ndim == 3 and p.shape[0] != heads):
      raise ValueError(f'{name}: {arg} must be [k, max_len] or [heads={heads}, k, max_len], '
                       f'got shape {p.shape}')
    if n > p.shape[-1]:
      raise ValueError(f'{name}: sequence length {n} exceeds the projections\' max_len '
                       f'{p.shape[-1]}; use inputs of at most {p.shape[-1]} tokens or build the '
                       'projections with a larger max_len')
  if e_proj.shape[-2] != f_proj.shape[-2]:
    raise ValueError(f'{name}: e_proj and f_proj must project to the same number of rows k; '
                     f'got k = {e_proj.shape[-2]} (e_proj {e_proj.shape}) and k = {f_proj.shape[-2]} '
                     f'(f_proj {f_proj.shape})')


def project(num, p, x, mask):
  """p · (x · mask): p [k, n] or [heads, k, n] (the columns of x's positions),
  x [b, n, h, d], mask [b, n, 1, 1] -> [b, k, h, d] in num.acc."""
  spec = 'rn,bnhd->brhd' if p.ndim == 2 else 'hrn,bnhd->brhd'
  return num.einsum(spec, p, x.astype(num.acc) * mask)


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
  check_projections('linformer_attention', key.shape[1], key.shape[2], e_proj, f_proj)
  empty = common.empty_output(query, key, value)
  if empty is not None:
    return empty
  num = common.numerics(query, key, value, precision=precision)
  mask = common.mask_as(key_mask, key, num.acc)

  n = key.shape[1]
  ek, fv = (project(num, p[..., :n], x, mask) for p, x in ((e_proj, key), (f_proj, value)))
  has_key = None if key_mask is None else jnp.any(key_mask, axis=1)
  return attend_projected(num, query, ek, fv, has_key)


def attend_projected(num, query, ek, fv, has_key):
  """softmax(Q (E K)ᵀ / sqrt(d)) (F V) from the projected ek, fv [b, k, h, *] (num.acc);
  zeros for the batch rows where has_key [b] (None: all) is False."""
  out = softmax.softmax_attention(query.astype(num.operand), ek.astype(num.operand),
                                  fv.astype(num.operand), implementation='xla',
                                  precision=num.precision)
  if has_key is not None:
    out = out * has_key[:, None, None, None]
  return out.astype(query.dtype)


# Matmul FLOPs of one forward call (2 per multiply-add), as benchmarks count them.
FLOP_FORMULA = {False: '8·b·h·n·k·d  (E·K and F·V, then Q against k rows and P·V)'}


def flops(b, n, h, d, *, rows=128, **_):
  return 8 * b * h * n * rows * d
