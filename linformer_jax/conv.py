"""Depthwise convolution as shifted sums, with a hand-written gradient.

`depthwise_conv(x, kernel, padding)` is `lax.conv_general_dilated` with
feature_group_count = channels (what `nn.Conv(..., feature_group_count=e)`
computes), written as a sum of w (or w×w) shifted, scaled copies of the input.
On CPU, XLA's grouped convolution is slow: with it, configs/audio.py (a
width-31 convolution over 4000 tokens) fit 600 training steps in 7 minutes on 2
cores; with this, 1400. The kernel's gradient needs care: sum over positions
of x[t + j]·g[t] for every offset j is, by autodiff of the shifted sum, w
separate reductions, slower than lax's conv; cutting time into blocks of w
makes it one batched matmul per channel plus a sum along diagonals.
`python benchmarks/conv.py` times both forms per layer (at the audio layer,
[8, 4000, 64] and w = 31: backward 13 ms against lax's 98 ms, forward 1.5 ms
against 81 ms; results/conv/conv.md).
"""
import functools
import itertools

import jax
import jax.numpy as jnp


def depthwise_conv(x, kernel, padding):
  """Per-channel convolution (cross-correlation, as lax.conv) over spatial axes.

  x: [batch, *spatial, channels]; kernel: [*window, channels] (one filter per
  channel); padding: one (low, high) pair per spatial axis, each in
  [0, window - 1] (centred: ((w - 1) // 2, w // 2); causal: (w - 1, 0); valid:
  (0, 0)). Returns [batch, *out, channels] with out = spatial + low + high -
  window + 1: y[t] = sum_j x_padded[t + j] * kernel[j]. O(size · window) time,
  no temporary larger than the padded input but for the kernel's gradient
  (one [channels, w, 2w] product per call).
  """
  return _conv(x, kernel, check_args(x, kernel, padding))


def check_args(x, kernel, padding):
  """`depthwise_conv`'s checks: its padding as int pairs, or ValueError naming the bad value."""
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  window = kernel.shape[:-1]
  if x.ndim != len(window) + 2 or len(padding) != len(window):
    raise ValueError(f'x {x.shape}, kernel {kernel.shape} and padding {padding} must have '
                     'one spatial axis each (x: [batch, *spatial, channels])')
  if x.shape[-1] != kernel.shape[-1]:
    raise ValueError(f'x has {x.shape[-1]} channels, kernel {kernel.shape[-1]}')
  for w, (lo, hi) in zip(window, padding):
    if not (0 <= lo < w and 0 <= hi < w):
      raise ValueError(f'padding {padding} must be in [0, window - 1] for window {window}')
  return padding


def _pad(x, padding):
  return jnp.pad(x, ((0, 0),) + padding + ((0, 0),))


def _shifted(xp, offset, sizes):
  """xp[:, o : o + n, ...] for each (o, n) of offset and sizes (leading spatial axes)."""
  return xp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, sizes))]


def _shifted_sum(xp, kernel, out_shape):
  """sum_j xp[:, j : j + out] * kernel[j] over every window offset j."""
  y = None
  for offset in itertools.product(*(range(w) for w in kernel.shape[:-1])):
    part = _shifted(xp, offset, out_shape)
    y = part * kernel[offset] if y is None else y + part * kernel[offset]
  return y


def _kernel_grad_last_axis(xp, g, w):
  """[w, c]: sum over batch and positions t of xp[..., t + j, :] * g[..., t, :].

  Positions are cut into q blocks of w: then xp[qw + r + j] lies in block q or
  q + 1, and the sum is one matmul per channel, [w, q] x [q, 2w] -> M[r, s],
  read along the diagonals s = r + j.
  """
  c, n = g.shape[-1], g.shape[-2]
  g = g.reshape(-1, n, c)
  xp = xp.reshape(-1, xp.shape[-2], c)
  q = -(-n // w)
  blocks_g = jnp.pad(g, ((0, 0), (0, q * w - n), (0, 0))).reshape(-1, q, w, c)
  xp = jnp.pad(xp, ((0, 0), (0, (q + 1) * w - xp.shape[1]), (0, 0))).reshape(-1, q + 1, w, c)
  pairs = jnp.concatenate([xp[:, :-1], xp[:, 1:]], axis=2)  # [b, q, 2w, c]
  acc = jnp.promote_types(g.dtype, jnp.float32)  # bf16 inputs: sum in float32
  m = jnp.einsum('bqrc,bqsc->crs', blocks_g, pairs, preferred_element_type=acc)
  r, j = jnp.arange(w)[:, None], jnp.arange(w)[None, :]
  return m[:, r, r + j].sum(axis=1).T  # [w, c]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, kernel, padding):
  return _shifted_sum(_pad(x, padding), kernel, _out_shape(x, kernel, padding))


def _out_shape(x, kernel, padding):
  return tuple(n + lo + hi - w + 1
               for n, w, (lo, hi) in zip(x.shape[1:-1], kernel.shape[:-1], padding))


def _conv_fwd(x, kernel, padding):
  return _conv(x, kernel, padding), (x, kernel)


def _conv_bwd(padding, residuals, g):
  x, kernel = residuals
  window = kernel.shape[:-1]
  # dx[u] = sum_j g[u + lo - j] kernel[j]: the same convolution of g with the
  # flipped kernel and the complementary padding.
  flipped = kernel[tuple(slice(None, None, -1) for _ in window)]
  back = tuple((w - 1 - lo, w - 1 - hi) for w, (lo, hi) in zip(window, padding))
  dx = _shifted_sum(_pad(g, back), flipped, x.shape[1:-1]).astype(x.dtype)
  # dkernel[j] = sum_t xp[t + j] g[t]: leading window axes by offset, the last blocked.
  xp = _pad(x, padding)
  out = g.shape[1:-1]
  rows = []
  for offset in itertools.product(*(range(w) for w in window[:-1])):
    rows.append(_kernel_grad_last_axis(_shifted(xp, offset, out[:-1]), g, window[-1]))
  dkernel = jnp.stack(rows).reshape(kernel.shape).astype(kernel.dtype)
  return dx, dkernel


_conv.defvjp(_conv_fwd, _conv_bwd)
