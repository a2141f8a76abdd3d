"""layers.py and ModelConfig: the attention module against Flax's, and bad values refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import linformer_jax as lj
from linformer_jax.attention import KINDS

VOCAB, N = 260, 40


def _tokens(b=2, n=N, pad_from=30):
  t = np.random.default_rng(0).integers(0, 256, size=(b, n)).astype(np.int32)
  t[1, pad_from:] = 256  # pad_id of the default config
  return jnp.asarray(t)


def test_model_config_rejects_bad_values():
  with pytest.raises(ValueError, match="unknown attention 'flash'"):
    lj.ModelConfig(attention='flash')
  with pytest.raises(ValueError, match="unknown linformer_sharing 'all'"):
    lj.ModelConfig(linformer_sharing='all')
  with pytest.raises(ValueError, match='emb_dim=30 is not divisible by num_heads=4'):
    lj.ModelConfig(emb_dim=30)
  with pytest.raises(ValueError, match='input length 80 exceeds max_len=64'):
    model = lj.MLMModel(lj.tiny())
    model.init(jax.random.key(0), jnp.zeros((1, 80), jnp.int32))


def _copy_into_flax(ours):
  return {name: ours[name] for name in ('query', 'key', 'value', 'out')}


@pytest.mark.parametrize('kind', KINDS)
def test_flax_attention_fn_matches_our_module(kind):
  cfg = lj.tiny(attention=kind, linformer_sharing='headwise')
  x = jax.random.normal(jax.random.key(0), (2, N, cfg.emb_dim))
  key_mask = _tokens() != 256
  ours = lj.MultiHeadAttention(cfg)
  params = ours.init(jax.random.key(1), x, key_mask)['params']
  want = ours.apply({'params': params}, x, key_mask)
  extra = {}
  if kind == 'linformer':
    extra = {'e_proj': params['linformer_e'], 'f_proj': params['linformer_f']}
  flax_mha = nn.MultiHeadDotProductAttention(
      num_heads=cfg.num_heads, qkv_features=cfg.emb_dim,
      attention_fn=lj.flax_attention_fn(kind, chunk_size=cfg.chunk_size, **extra))
  got = flax_mha.apply({'params': _copy_into_flax(params)}, x, mask=key_mask[:, None, None, :])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_flax_attention_fn_rejects_masks_it_cannot_apply():
  q = jnp.ones((1, 8, 2, 4))
  fn = lj.flax_attention_fn('linear')
  causal_mask = nn.make_causal_mask(jnp.ones((1, 8)))
  with pytest.raises(ValueError, match=r'key-padding mask .* got mask shape \(1, 1, 8, 8\)'):
    fn(q, q, q, mask=causal_mask)
  with pytest.raises(ValueError, match='not supported'):
    fn(q, q, q, dropout_rate=0.1, deterministic=False)
  with pytest.raises(ValueError, match="unknown attention kind 'flash'"):
    lj.flax_attention_fn('flash')
  with pytest.raises(ValueError, match='needs e_proj and f_proj'):
    lj.flax_attention_fn('linformer')
  # The causal variant is the supported way to get causal attention.
  np.testing.assert_allclose(lj.flax_attention_fn('linear', causal=True)(q, q, q),
                             lj.linear_attention(q, q, q, causal=True))
