"""Whole models: an Embedder, the layers.Encoder and a head (masked-LM, causal LM or classifier)."""
import jax.numpy as jnp
from jax import lax
from flax import linen as nn

from linformer_jax import layers
from linformer_jax.model_config import ModelConfig


class Embedder(nn.Module):
  """Token (or float-feature) embedding plus positions (learned or sinusoidal; none
  for 'rotary', which acts in attention, and 'none'), then dropout.

  Returns (x [batch, n, emb_dim], key_mask [batch, n] bool or None, token_embed).
  With `cls` a learned CLS vector is prepended (n grows by one).
  """
  config: ModelConfig
  cls: bool = False

  @nn.compact
  def __call__(self, inputs, *, deterministic=True, offset=0):
    """`offset`: absolute position of the first token (decoding; may be traced).
    Learned positions past max_len would be clamped: LanguageModel guards that."""
    cfg = self.config
    pd = jnp.dtype(cfg.param_dtype)
    n = inputs.shape[1] + int(self.cls)
    if n > cfg.max_len:
      raise ValueError(f'input length {n} exceeds max_len={cfg.max_len}')
    token_embed, key_mask = None, None
    if cfg.vocab_size:
      token_embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, param_dtype=pd, name='token_embed')
      x = token_embed(inputs)
      if cfg.pad_id is not None:
        key_mask = inputs != cfg.pad_id
    else:
      if inputs.shape[-1] != cfg.feature_dim:
        raise ValueError(f'input feature width {inputs.shape[-1]} != feature_dim={cfg.feature_dim}')
      x = nn.Dense(cfg.emb_dim, name='input_embed', **cfg.dense_kwargs())(inputs)
    if self.cls:
      cls = self.param('cls', nn.initializers.normal(0.02), (cfg.emb_dim,), pd)
      x = jnp.concatenate([jnp.broadcast_to(cls, x[:, :1].shape), x], axis=1)
      if key_mask is not None:
        key_mask = jnp.pad(key_mask, ((0, 0), (1, 0)), constant_values=True)
    if cfg.position == 'learned':
      table = self.param('pos_embed', nn.initializers.normal(0.02), (cfg.max_len, cfg.emb_dim), pd)
      x = x + lax.dynamic_slice_in_dim(table, offset, n)
    elif cfg.position == 'sinusoidal':
      x = x + layers.sinusoidal(n, cfg.emb_dim, offset)
    x = x.astype(jnp.dtype(cfg.dtype))
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic), key_mask, token_embed


def tied_logits(cfg, token_embed, x):
  """x [batch, n, emb] times the token embedding, in float32 at the config's precision."""
  return jnp.einsum('bne,ve->bnv', x.astype(jnp.float32), token_embed.embedding.astype(jnp.float32),
                    precision=cfg.matmul_precision)


class MLMModel(nn.Module):
  """Masked-LM: tokens [batch, n] int -> logits [batch, n, vocab_size] float32.

  Positions holding `pad_id` are masked out of attention. The output layer is
  tied to the token embedding (plus a bias), after a Dense-gelu-LayerNorm
  transform as in BERT.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, *, deterministic=True):
    cfg = self.config
    x, key_mask, token_embed = Embedder(cfg, name='embed')(tokens, deterministic=deterministic)
    x = layers.Encoder(cfg, name='encoder')(x, key_mask, deterministic=deterministic)
    pd = jnp.dtype(cfg.param_dtype)
    x = nn.Dense(cfg.emb_dim, name='mlm_dense', **cfg.dense_kwargs())(x)
    x = nn.LayerNorm(param_dtype=pd, name='mlm_norm')(nn.gelu(x))
    bias = self.param('mlm_bias', nn.initializers.zeros, (cfg.vocab_size,), pd)
    return tied_logits(cfg, token_embed, x) + bias


def context_limit(config: ModelConfig) -> int | None:
  """Most tokens a LanguageModel can decode in one sequence, None if unbounded:
  max_len for learned positions (the table's rows) or when any layer's kind says
  bounded_context (softmax: the KV cache's slots)."""
  bounded = any(k is not None and k.bounded_context for k in config.layer_records)
  return config.max_len if config.position == 'learned' or bounded else None


class LanguageModel(nn.Module):
  """Causal (next-token) LM: tokens [batch, n] int -> logits [batch, n, vocab_size] float32.

  Logits at i predict token i + 1 from tokens 0..i. Needs config.causal (the
  attention and the convolution see only the past); the output layer is the
  token embedding (tied) plus a bias, straight after the encoder's final
  LayerNorm (GPT-2; MLMModel adds a BERT transform first, and has no decoding
  path). Padding (pad_id) is masked out of attention.

  Decoding: `prefill(tokens)` -> (logits, cache) runs the prompt through the
  parallel causal kernels and keeps each layer's state; `decode(token, cache)`
  (token [batch]) -> (logits [batch, vocab_size], cache) appends one token in
  O(layers·d·d_v) for the linear kinds. Equal (to rounding) to the parallel
  forward over the whole sequence. Past `context_limit(config)` tokens the
  logits are NaN (generate.py raises before).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, *, deterministic=True, cache=None, prefill=False):
    cfg = self.config
    layers.check_decodable(cfg)
    decoding = cache is not None or prefill
    offset = 0 if cache is None else cache['position']
    x, key_mask, token_embed = Embedder(cfg, name='embed')(
        tokens, deterministic=deterministic, offset=offset)
    encoder = layers.Encoder(cfg, name='encoder')
    if decoding:
      x, layer_caches = encoder(x, key_mask, cache=None if cache is None else cache['layers'],
                          prefill=prefill, offset=offset)
    else:
      x = encoder(x, key_mask, deterministic=deterministic)
    bias = self.param('lm_bias', nn.initializers.zeros, (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))
    logits = tied_logits(cfg, token_embed, x) + bias
    if not decoding:
      return logits
    position = offset + tokens.shape[1]
    limit = context_limit(cfg)
    if limit is not None:
      logits = jnp.where(position <= limit, logits, jnp.nan)
    return logits, {'position': jnp.asarray(position, jnp.int32), 'layers': layer_caches}

  def prefill(self, tokens):
    """tokens [batch, n], n >= 1 -> (logits [batch, n, vocab_size], cache after them)."""
    if tokens.shape[1] < 1:
      raise ValueError('prefill needs at least one token (start a sequence with CLS)')
    return self(tokens, prefill=True)

  def decode(self, token, cache):
    """token [batch] int, cache -> (logits [batch, vocab_size] of the next token, cache)."""
    logits, cache = self(token[:, None], cache=cache)
    return logits[:, 0], cache


class Classifier(nn.Module):
  """Sequence classifier: tokens [batch, n] or features [batch, n, feature_dim]
  -> logits [batch, num_classes] float32, pooled by `config.pooling` ('mean'
  over real tokens, or a prepended 'cls' token)."""
  config: ModelConfig

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    cfg = self.config
    use_cls = cfg.pooling == 'cls'
    x, key_mask, _ = Embedder(cfg, cls=use_cls, name='embed')(inputs, deterministic=deterministic)
    x = layers.Encoder(cfg, name='encoder')(x, key_mask, deterministic=deterministic).astype(jnp.float32)
    if use_cls:
      pooled = x[:, 0]
    elif key_mask is None:
      pooled = x.mean(axis=1)
    else:
      w = key_mask[..., None].astype(jnp.float32)
      pooled = (x * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)
    return nn.Dense(cfg.num_classes, name='head', param_dtype=jnp.dtype(cfg.param_dtype),
                    precision=cfg.matmul_precision)(pooled)
