"""Flax NNX modules around the kernels: the NNX twins of `linformer_jax.layers`.

Same `ModelConfig`, same options, same parameter shapes and names as the linen
modules, and the same kernels through `attention.attend`; `load_linen_params`
copies a linen params tree in, so one set of weights gives one output in both.
Under a mesh with a 'sequence' axis they split the sequence as the linen
modules do (`sequence_sharding`, the one place both call). Dropout follows
NNX: active until `model.eval()` (or a call with `deterministic=True`), drawing
from the 'dropout' stream of the Rngs given at construction. Needs flax >= 0.12.1 (nnx.List, LayerNorm's promote_dtype).

    from flax import nnx
    import linformer_jax as lj
    from linformer_jax import nnx as ljnnx
    encoder = ljnnx.Encoder(lj.tiny(), rngs=nnx.Rngs(0))
    y = encoder(x, key_mask)                  # [batch, n, emb_dim] -> same
"""
import inspect

import flax
import jax.numpy as jnp
from flax import nnx

from linformer_jax import attention as kernels
from linformer_jax import sequence_sharding
from linformer_jax.layers import _linformer_init, attend, mix_locally, rotary
from linformer_jax.model_config import ModelConfig

if 'promote_dtype' not in inspect.signature(nnx.LayerNorm.__init__).parameters:
  raise ImportError(f'linformer_jax.nnx needs flax >= 0.12.1, found flax {flax.__version__}')


def _linformer_param(cfg, shape, rngs):
  return nnx.Param(_linformer_init(cfg.linformer_k)(rngs.params(), shape, jnp.dtype(cfg.param_dtype)))


def _layer_norm(cfg, rngs):
  # No promotion: statistics, scale and bias in float32 and one cast to `dtype`
  # at the end, as linen does; NNX's default first rounds x, scale and bias to
  # bfloat16, an ulp away from the linen twin.
  return nnx.LayerNorm(cfg.emb_dim, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                       rngs=rngs,
                       promote_dtype=lambda args, **_: args)


def _check_width(x, cfg):
  if x.shape[-1] != cfg.emb_dim:
    raise ValueError(f'input width {x.shape[-1]} != emb_dim={cfg.emb_dim}; '
                     'x must be [batch, n, emb_dim]')


class MultiHeadAttention(nnx.Module):
  """Multi-head self-attention with the kernel named by `config.attention`.

  Parameters 'query', 'key', 'value', 'out' as in the linen module; Linformer
  adds 'linformer_e' ('linformer_f') by `config.linformer_sharing`: 'none'
  [heads, k, max_len] each, 'headwise' [k, max_len] each, 'key-value' one
  E = F, 'layerwise' none here (the Encoder passes its `shared_proj`). A gated
  kind ('linear+window') adds 'gate' [heads], its mixing logits, zeros at init.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    if cfg.attention not in kernels.KINDS:
      raise ValueError(f'attention={cfg.attention!r} has no attention module; valid: {kernels.KINDS}')
    heads = (cfg.num_heads, cfg.head_dim)
    dense = lambda: nnx.LinearGeneral(cfg.emb_dim, heads, rngs=rngs, **cfg.dense_kwargs())
    self.query, self.key, self.value = dense(), dense(), dense()
    self.out = nnx.LinearGeneral(heads, cfg.emb_dim, axis=(-2, -1), rngs=rngs, **cfg.dense_kwargs())
    self.gate = (nnx.Param(jnp.zeros((cfg.num_heads,), jnp.dtype(cfg.param_dtype)))
                 if cfg.kind.gated else None)
    sharing = cfg.linformer_sharing
    if cfg.kind.needs_projections and sharing != 'layerwise':
      shape = (cfg.linformer_k, cfg.max_len)
      if sharing == 'none':
        shape = (cfg.num_heads,) + shape
      self.linformer_e = _linformer_param(cfg, shape, rngs)
      if sharing != 'key-value':
        self.linformer_f = _linformer_param(cfg, shape, rngs)

  def __call__(self, x, key_mask=None, shared_proj=None):
    """x: [batch, n, emb_dim], key_mask: [batch, n] bool (True: real token) -> [batch, n, emb_dim].

    Cost as the kernel: O(n·d²) linear, O(n·k·d) Linformer, O(n²·d) softmax, O(n·w·d) window.
    """
    cfg = self.config
    _check_width(x, cfg)
    dtype = jnp.dtype(cfg.dtype)
    q, k, v = (dense(x).astype(dtype) for dense in (self.query, self.key, self.value))
    if cfg.position == 'rotary':
      q, k = rotary(q), rotary(k)
    return self.out(attend(cfg, q, k, v, key_mask, self._projections(shared_proj),
                           None if self.gate is None else self.gate[...]))

  def _projections(self, shared_proj):
    cfg = self.config
    if not cfg.kind.needs_projections:
      return None
    if cfg.linformer_sharing == 'layerwise':
      if shared_proj is None:
        raise ValueError("linformer_sharing='layerwise' needs the encoder's shared_proj "
                         '[k, max_len]: use Encoder, or pass shared_proj')
      return shared_proj, shared_proj
    e = self.linformer_e[...]
    return e, (e if cfg.linformer_sharing == 'key-value' else self.linformer_f[...])


class LocalMixing(nnx.Module):
  """Depthwise convolution over neighbouring tokens: [batch, n, emb] -> same.

  As `layers.LocalMixing`: width `conv_width`, centred or (causal) over the
  current and previous tokens; with conv_dims=2 over the trailing image grid
  of `grid_width` columns (leading tokens get zeros). Padding keys are zeroed
  first. O(n·emb·conv_width^conv_dims).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    w, e = cfg.conv_width, cfg.emb_dim
    # nnx.Conv holds the parameters (as nnx.Conv(..., feature_group_count=e));
    # conv.depthwise_conv computes, as in layers.DepthwiseConv.
    self.conv = nnx.Conv(e, e, (w,) * cfg.conv_dims, feature_group_count=e,
                         dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)

  def _conv(self, x, padding):
    x, kernel, bias = nnx.nn.dtypes.promote_dtype(
        (x, self.conv.kernel[...], self.conv.bias[...]), dtype=self.conv.dtype)
    return sequence_sharding.depthwise_conv(x, kernel[..., 0, :], padding) + bias

  def __call__(self, x, key_mask=None):
    if key_mask is not None:
      x = x * key_mask[..., None].astype(x.dtype)
    return mix_locally(self._conv, x, self.config)


class EncoderBlock(nnx.Module):
  """Pre-LayerNorm block of residual branches: x + Conv(LN(x)) when
  conv_width > 0, x + Attn(LN(x)) unless attention='none', then x + MLP(LN(x))."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    e = cfg.emb_dim
    norm = lambda: _layer_norm(cfg, rngs)
    # Absent branches are None, assigned once: NNX fixes an attribute's kind on first assignment.
    self.local_norm, self.local = ((norm(), LocalMixing(cfg, rngs=rngs)) if cfg.conv_width
                                   else (None, None))
    self.attention_norm, self.attention = ((norm(), MultiHeadAttention(cfg, rngs=rngs))
                                           if cfg.attention != 'none' else (None, None))
    self.mlp_norm = norm()
    self.mlp_in = nnx.Linear(e, cfg.mlp_dim, rngs=rngs, **cfg.dense_kwargs())
    self.mlp_out = nnx.Linear(cfg.mlp_dim, e, rngs=rngs, **cfg.dense_kwargs())
    self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)

  def __call__(self, x, key_mask=None, *, deterministic=None, shared_proj=None):
    """x: [batch, n, emb_dim], key_mask: [batch, n] bool -> [batch, n, emb_dim]."""
    _check_width(x, self.config)
    drop = lambda y: self.dropout(y, deterministic=deterministic)
    if self.local is not None:
      x = x + drop(self.local(self.local_norm(x), key_mask))
    if self.attention is not None:
      x = x + drop(self.attention(self.attention_norm(x), key_mask, shared_proj))
    y = self.mlp_out(drop(nnx.gelu(self.mlp_in(self.mlp_norm(x)))))
    return x + drop(y)

  def _linen_children(self):
    # Linen names its LayerNorms and Denses by creation order, so LayerNorm_0 is
    # the conv branch's norm only when that branch exists.
    norms = [n for n in (self.local_norm, self.attention_norm, self.mlp_norm) if n is not None]
    children = {f'LayerNorm_{i}': n for i, n in enumerate(norms)}
    children.update(Dense_0=self.mlp_in, Dense_1=self.mlp_out)
    children.update({name: getattr(self, name) for name in ('local', 'attention')
                     if getattr(self, name) is not None})
    return children


class Encoder(nnx.Module):
  """`num_layers` EncoderBlocks and a final LayerNorm: [batch, n, emb] -> same.

  Block i is built from `config.layer_config(i)` (a hybrid mixes kinds). Holds
  Linformer's one E = F [k, max_len] when linformer_sharing='layerwise', shared
  by every linformer block.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    layerwise = cfg.linformer_sharing == 'layerwise' and any(k and k.needs_projections
                                                             for k in cfg.layer_records)
    self.linformer_proj = (_linformer_param(cfg, (cfg.linformer_k, cfg.max_len), rngs)
                           if layerwise else None)
    self.blocks = nnx.List([EncoderBlock(cfg.layer_config(i), rngs=rngs)
                            for i in range(cfg.num_layers)])
    self.final_norm = _layer_norm(cfg, rngs)

  def __call__(self, x, key_mask=None, *, deterministic=None):
    """x: [batch, n, emb_dim], key_mask: [batch, n] bool -> [batch, n, emb_dim]."""
    shared = None if self.linformer_proj is None else self.linformer_proj[...]
    for block in self.blocks:
      x = block(x, key_mask, deterministic=deterministic, shared_proj=shared)
    return self.final_norm(x)

  def _linen_children(self):
    children = {f'block_{i}': b for i, b in enumerate(self.blocks)}
    children['final_norm'] = self.final_norm
    if self.linformer_proj is not None:
      children['linformer_proj'] = self.linformer_proj
    return children


def _children(module):
  """Linen name -> NNX submodule or Param, for the parameters under `module`."""
  if hasattr(module, '_linen_children'):
    return module._linen_children()
  # Elsewhere attribute names are linen's names ('kernel', 'bias', 'scale', 'query', ...).
  return {name: v for name, v in vars(module).items()
          if isinstance(v, nnx.Param) or (isinstance(v, nnx.Module) and nnx.state(v, nnx.Param))}


def load_linen_params(module, params):
  """Copies a linen params tree into the NNX `module` in place and returns it.

  `params` is what the linen twin's `init` gave (with or without the outer
  'params' key), for the same ModelConfig. Raises ValueError naming the path
  of a missing or extra name or a shape mismatch, before anything is copied.
  """
  if set(params) == {'params'}:
    params = params['params']
  for param, value in _pairs(module, params, 'params'):
    param[...] = value
  return module


def _pairs(module, tree, path):
  """[(NNX Param, linen array)] for everything under `module`, checked."""
  children = _children(module)
  if set(tree) != set(children):
    raise ValueError(f'{path}: linen has {sorted(tree)}, the NNX {type(module).__name__} '
                     f'expects {sorted(children)}; were both built from the same ModelConfig?')
  pairs = []
  for name, child in children.items():
    if isinstance(child, nnx.Module):
      pairs += _pairs(child, tree[name], f'{path}/{name}')
      continue
    value = jnp.asarray(tree[name])
    if value.shape != child.shape:
      raise ValueError(f'{path}/{name}: linen shape {value.shape} != NNX shape {child.shape}')
    pairs.append((child, value))
  return pairs
