"""Flax linen layers around the kernels: attention, local mixing, blocks, encoder, positions.

The whole models (embeddings and heads) are in models.py. Causal layers also
decode incrementally: their `__call__` takes `prefill=True` (the whole prompt in
parallel; returns (out, cache), the state after it) or a `cache` (x holds the
next token only, [batch, 1, ...]; returns (out, new cache)). A cache is a dict
of arrays: per attention layer the kernel's decoding state
(`attention.decode_init`), per causal convolution its last conv_width - 1 inputs.

Under an ambient mesh whose axis 'sequence' has size > 1 (`jax.set_mesh`), the
attention and convolution kernels split every sequence over that axis
(`sequence_sharding`); decoding is single-device.
"""
import functools
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from linformer_jax import attention as kernels
from linformer_jax import sequence_sharding
from linformer_jax.model_config import ModelConfig


def _linformer_init(k):
  # Entries ~ N(0, 1/k): E·K then has the scale of one key, whatever the length.
  return nn.initializers.normal(stddev=k ** -0.5)


class MultiHeadAttention(nn.Module):
  """Multi-head self-attention with the kernel named by `config.attention`.

  Parameter names and shapes ('query', 'key', 'value', 'out') match
  `flax.linen.MultiHeadDotProductAttention`. Linformer adds its projections,
  shared as `config.linformer_sharing` says (Wang et al. 2020, section 4):
  'none' one E and F per head, 'headwise' one E and F per layer, 'key-value'
  one E = F per layer, 'layerwise' one E = F for the whole encoder (passed in
  as `shared_proj`). A gated kind ('linear+window') adds 'gate' [heads], its
  per-head mixing logits, initialised to 0 (an even mix).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x, key_mask=None, shared_proj=None, *, cache=None, prefill=False,
               offset=0):
    """x: [batch, n, emb_dim], key_mask: [batch, n] bool -> [batch, n, emb_dim].

    Causal only: `prefill` also returns the decoding state after x; with `cache`
    (that state) x is the one token at absolute position `offset` and the new
    state is returned too. O(d·d_v) per decoded token (softmax: O(max_len·d),
    window: O(window·d)).
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    dense = lambda name: nn.DenseGeneral((cfg.num_heads, cfg.head_dim), name=name,
                                         **cfg.dense_kwargs())
    # The kernels take compute-dtype inputs (bf16 operands, float32 sums).
    q, k, v = (dense(name)(x).astype(dtype) for name in ('query', 'key', 'value'))
    if cfg.position == 'rotary':
      q, k = rotary(q, offset=offset), rotary(k, offset=offset)
    out_proj = nn.DenseGeneral(cfg.emb_dim, axis=(-2, -1), name='out', **cfg.dense_kwargs())
    precision = cfg.matmul_precision
    gate = (self.param('gate', nn.initializers.zeros_init(), (cfg.num_heads,),
                       jnp.dtype(cfg.param_dtype)) if cfg.kind.gated else None)
    if cache is not None or prefill:
      check_decodable(cfg)
      real = None if key_mask is None else key_mask[:, 0]
      if cache is not None:
        out, cache = kernels.decode_step(cfg.attention, cache, q[:, 0], k[:, 0], v[:, 0],
                                         key_mask=real, precision=precision, gate=gate)
        return out_proj(out[:, None].astype(dtype)), cache
      max_len = cfg.max_len if cfg.kind.bounded_context else None
      cache = kernels.causal_state(cfg.attention, k, v, key_mask=key_mask, max_len=max_len,
                                   precision=precision, window=cfg.kernel_window)
    projections = self._linformer_projections(shared_proj) if cfg.kind.needs_projections else None
    out = out_proj(attend(cfg, q, k, v, key_mask, projections, gate))
    return (out, cache) if prefill else out

  def _linformer_projections(self, shared_proj):
    cfg = self.config
    shape = (cfg.linformer_k, cfg.max_len)
    init = _linformer_init(cfg.linformer_k)
    param = lambda name, shape: self.param(name, init, shape, jnp.dtype(cfg.param_dtype))
    if cfg.linformer_sharing == 'layerwise':
      if shared_proj is None:
        raise ValueError("linformer_sharing='layerwise' needs the encoder's shared_proj")
      return shared_proj, shared_proj
    if cfg.linformer_sharing == 'key-value':
      e_proj = param('linformer_e', shape)
      return e_proj, e_proj
    if cfg.linformer_sharing == 'none':
      shape = (cfg.num_heads,) + shape
    return param('linformer_e', shape), param('linformer_f', shape)


def attend(cfg, q, k, v, key_mask=None, projections=None, gate=None):
  """The kernel of single-kind `cfg` on q, k, v [batch, n, heads, d], as configured.

  With cfg.remat_attention the kernel runs under jax.checkpoint: the backward
  pass recomputes it (one more forward of the kernel) so that its residuals,
  softmax's n×n weights, need not be kept per layer. Whether memory falls is
  XLA's scheduling: on XLA:CPU it measured no lower (benchmarks/README.md,
  recall section). Shared by the linen and NNX layers.
  """
  fn = functools.partial(sequence_sharding.attend, cfg.attention, causal=cfg.causal,
                         chunk_size=cfg.chunk_size,
                         implementation=cfg.kernel_implementation, precision=cfg.matmul_precision,
                         window=cfg.kernel_window)
  if cfg.remat_attention:
    fn = jax.checkpoint(fn)
  return fn(q, k, v, key_mask=key_mask, projections=projections, gate=gate)


def check_decodable(cfg):
  """ValueError unless every layer of `cfg` (a hybrid's included) can decode incrementally."""
  if not cfg.causal:
    raise ValueError('incremental decoding needs a causal model (causal=True); got causal=False')
  for name in dict.fromkeys(cfg.layer_kinds):
    if name != 'none':  # the attention-free control decodes its convolutions alone
      kernels.check(name, decoding=True)


def _positions(n, offset):
  """Absolute positions offset .. offset + n - 1 as float32 [n]; offset may be traced."""
  return jnp.arange(n, dtype=jnp.float32) + jnp.asarray(offset, jnp.float32)


def rotary(x, base=10000.0, offset=0):
  """Rotary position embedding (Su et al. 2021) of x [batch, n, heads, d], d even.

  Feature pairs (i, i + d/2) of position p = offset + index are rotated by angle
  p·base^(-2i/d), so q·k depends on positions only through their difference.
  """
  n, d = x.shape[1], x.shape[-1]
  freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2 / d)
  angle = _positions(n, offset)[:, None] * freq  # [n, d/2]
  cos, sin = jnp.cos(angle)[:, None], jnp.sin(angle)[:, None]  # [n, 1, d/2]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def sinusoidal(n, dim, offset=0):
  """Fixed sine/cosine position table (Vaswani et al. 2017) of positions
  offset .. offset + n - 1: [n, dim] float32."""
  half = dim // 2
  freq = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  angle = _positions(n, offset)[:, None] * freq
  table = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)
  return jnp.pad(table, ((0, 0), (0, dim - 2 * half)))


class DepthwiseConv(nn.Module):
  """`nn.Conv(e, window, feature_group_count=e)`'s parameters ('kernel'
  [*window, 1, e], 'bias' [e], same initialisers) computed by
  `conv.depthwise_conv`, which is much faster on CPU. padding: one (low, high)
  pair per window axis."""
  window: tuple
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, padding):
    e = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), tuple(self.window) + (1, e),
                        jnp.dtype(self.param_dtype))
    bias = self.param('bias', nn.initializers.zeros_init(), (e,), jnp.dtype(self.param_dtype))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=jnp.dtype(self.dtype))
    return sequence_sharding.depthwise_conv(x, kernel[..., 0, :], padding) + bias


def centred(w):
  """The (low, high) padding that keeps the length: lax's 'SAME' for odd and even w."""
  return ((w - 1) // 2, w // 2)


def mix_locally(conv, x, cfg):
  """LocalMixing's parallel form for linen and NNX: conv(x, padding) along the
  sequence (causal or centred), or over the trailing image grid (conv_dims=2;
  leading tokens get zeros)."""
  w = cfg.conv_width
  if cfg.conv_dims == 1:
    return conv(x, ((w - 1, 0),) if cfg.causal else (centred(w),))
  b, n, e = x.shape
  rows, head = n // cfg.grid_width, n % cfg.grid_width
  grid = x[:, head:].reshape(b, rows, cfg.grid_width, e)
  y = conv(grid, (centred(w),) * 2).reshape(b, rows * cfg.grid_width, e)
  return jnp.concatenate([jnp.zeros_like(x[:, :head]), y], axis=1)


class LocalMixing(nn.Module):
  """Depthwise convolution over neighbouring tokens: [batch, n, emb] -> same.

  Width `conv_width` along the sequence: centred for encoders, over the current
  and previous tokens only when `causal`. With conv_dims=2 the last
  (n // grid_width) * grid_width tokens are an image grid in row-major order
  and the kernel is conv_width × conv_width; leading tokens outside the grid
  (a CLS token) get zeros. Padding keys (key_mask False) are zeroed first, so
  they change nothing. O(n·emb·conv_width^conv_dims) time, no n×n array.
  Causal decoding (`prefill`, `cache`: see the module docstring) keeps the last
  conv_width - 1 inputs, [batch, conv_width - 1, emb] (zeros before the start).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x, key_mask=None, *, cache=None, prefill=False):
    cfg = self.config
    if key_mask is not None:
      x = x * key_mask[..., None].astype(x.dtype)
    w = cfg.conv_width
    conv = DepthwiseConv((w,) * cfg.conv_dims, cfg.dtype, cfg.param_dtype, name='conv')
    if cache is not None or prefill:
      check_decodable(cfg)
      if cache is not None:
        window = jnp.concatenate([cache.astype(x.dtype), x], axis=1)  # [b, w, e]
        return conv(window, ((0, 0),)), window[:, 1:]
      # The left zero padding of the parallel form is the empty history.
      history = jnp.pad(x, ((0, 0), (w - 1, 0), (0, 0)))[:, x.shape[1]:]
      return conv(x, ((w - 1, 0),)), history
    return mix_locally(conv, x, cfg)


class EncoderBlock(nn.Module):
  """Pre-LayerNorm block of residual branches: x + Conv(LN(x)) when
  conv_width > 0, x + Attn(LN(x)) unless attention='none', then x + MLP(LN(x))."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x, key_mask=None, *, deterministic=True, shared_proj=None, cache=None,
               prefill=False, offset=0):
    """Causal decoding (`prefill`, `cache`, `offset`: see MultiHeadAttention)
    returns (out, cache) with the cache {'local': ..., 'attention': ...} of its branches."""
    cfg = self.config
    norm = lambda: nn.LayerNorm(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=deterministic)
    decoding = cache is not None or prefill
    new_cache = {}

    def branch(name, fn, *args, **kwargs):
      if not decoding:
        return fn(*args, **kwargs)
      kwargs.update(cache=None if cache is None else cache[name], prefill=prefill)
      y, new_cache[name] = fn(*args, **kwargs)
      return y

    if cfg.conv_width:
      x = x + drop(branch('local', LocalMixing(cfg, name='local'), norm()(x),
                          key_mask))
    if cfg.attention != 'none':
      y = branch('attention', MultiHeadAttention(cfg, name='attention'),
                 norm()(x), key_mask, shared_proj, offset=offset)
      x = x + drop(y)
    y = nn.Dense(cfg.mlp_dim, **cfg.dense_kwargs())(norm()(x))
    y = nn.Dense(cfg.emb_dim, **cfg.dense_kwargs())(drop(nn.gelu(y)))
    return (x + drop(y), new_cache) if decoding else x + drop(y)


class Encoder(nn.Module):
  """`num_layers` EncoderBlocks and a final LayerNorm: [batch, n, emb] -> same.

  Block i is built from `config.layer_config(i)`: a hybrid (layer_attention)
  mixes kinds, each block alike inside. Linformer's 'layerwise' E = F is one
  parameter here, shared by every linformer block.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x, key_mask=None, *, deterministic=True, cache=None, prefill=False,
               offset=0):
    """Causal decoding (see MultiHeadAttention) returns (out, {'block_i': block cache})."""
    cfg = self.config
    shared = None
    if cfg.linformer_sharing == 'layerwise' and any(k and k.needs_projections
                                                    for k in cfg.layer_records):
      shared = self.param('linformer_proj', _linformer_init(cfg.linformer_k),
                          (cfg.linformer_k, cfg.max_len), jnp.dtype(cfg.param_dtype))
    decoding = cache is not None or prefill
    new_cache = {}
    for i in range(cfg.num_layers):
      name = f'block_{i}'
      block = EncoderBlock(cfg.layer_config(i), name=name)
      if decoding:
        x, new_cache[name] = block(x, key_mask, cache=None if cache is None else cache[name],
                                   prefill=prefill, offset=offset)
      else:
        x = block(x, key_mask, deterministic=deterministic, shared_proj=shared)
    x = nn.LayerNorm(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                     name='final_norm')(x)
    return (x, new_cache) if decoding else x

