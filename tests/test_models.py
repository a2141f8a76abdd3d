"""models.py: shapes, exact parameter counts, jit vs eager, padding and causality."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linformer_jax as lj
from linformer_jax.model_config import ATTENTIONS, LINFORMER_SHARING

VOCAB, N = 260, 40


def _tokens(b=2, n=N, pad_from=30):
  t = np.random.default_rng(0).integers(0, 256, size=(b, n)).astype(np.int32)
  t[1, pad_from:] = 256  # pad_id of the default config
  return jnp.asarray(t)


def _num_params(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def expected_mlm_params(cfg):
  """Parameter count of MLMModel, written out from the architecture."""
  e, m, h = cfg.emb_dim, cfg.mlp_dim, cfg.num_heads
  attention = 4 * (e * e + e)  # query, key, value, out: kernels and biases
  k, max_len = cfg.linformer_k, cfg.max_len
  linformer_per_layer = {'none': 2 * h * k * max_len, 'headwise': 2 * k * max_len,
                         'key-value': k * max_len, 'layerwise': 0}
  if cfg.attention == 'none':
    attention = -2 * e  # No attention branch, nor its LayerNorm.
  block = 2 * 2 * e + attention + (e * m + m) + (m * e + e)  # two LayerNorms, attention, MLP
  if cfg.attention == 'linformer':
    block += linformer_per_layer[cfg.linformer_sharing]
  if cfg.attention == 'linear+window':
    block += h  # the per-head gate between window and the paper's attention
  encoder = cfg.num_layers * block + 2 * e  # final LayerNorm
  if cfg.attention == 'linformer' and cfg.linformer_sharing == 'layerwise':
    encoder += k * max_len
  embeddings = cfg.vocab_size * e + cfg.max_len * e
  mlm_head = (e * e + e) + 2 * e + cfg.vocab_size  # dense, LayerNorm, output bias (tied weights)
  return embeddings + encoder + mlm_head


CASES = [(a, 'headwise') for a in ATTENTIONS if a != 'linformer'] + [
    ('linformer', s) for s in LINFORMER_SHARING]


@pytest.mark.parametrize('attention,sharing', CASES)
def test_mlm_shapes_and_exact_parameter_count(attention, sharing):
  cfg = lj.tiny(attention=attention, linformer_sharing=sharing)
  model = lj.MLMModel(cfg)
  params = model.init(jax.random.key(0), _tokens())
  assert _num_params(params) == expected_mlm_params(cfg)
  logits = model.apply(params, _tokens())
  assert logits.shape == (2, N, VOCAB) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_tiny_parameter_counts_pinned():
  # Pins the tiny model: a change to the architecture must change these on purpose.
  counts = {f'{a}/{s}': _num_params(lj.MLMModel(lj.tiny(attention=a, linformer_sharing=s)).init(
      jax.random.key(0), _tokens())) for a, s in CASES}
  assert counts == {'softmax/headwise': 10228, 'linear/headwise': 10228, 'elu_linear/headwise': 10228,
                    'window/headwise': 10228, 'linear+window/headwise': 10232,
                    'none/headwise': 7988, 'linformer/none': 14324, 'linformer/headwise': 12276,
                    'linformer/key-value': 11252, 'linformer/layerwise': 10740}


@pytest.mark.parametrize('attention', ATTENTIONS)
def test_jit_equals_eager_and_dropout_is_deterministic_when_off(attention):
  cfg = lj.tiny(attention=attention, dropout_rate=0.1)
  model = lj.MLMModel(cfg)
  params = model.init(jax.random.key(0), _tokens())
  eager = model.apply(params, _tokens())
  jitted = jax.jit(model.apply)(params, _tokens())
  np.testing.assert_allclose(jitted, eager, atol=1e-5, rtol=1e-5)
  rngs = {'dropout': jax.random.key(1)}
  train = model.apply(params, _tokens(), deterministic=False, rngs=rngs)
  assert not np.allclose(train, eager)


@pytest.mark.parametrize('attention', ATTENTIONS)
def test_padding_tokens_do_not_change_real_outputs(attention):
  cfg = lj.tiny(attention=attention)
  model = lj.MLMModel(cfg)
  t = _tokens()
  params = model.init(jax.random.key(0), t)
  out = model.apply(params, t)
  # Same real tokens, padding moved further out: positions before it must not change.
  longer = jnp.concatenate([t, jnp.full((2, 10), 256, jnp.int32)], axis=1)
  out_longer = model.apply(params, longer)
  np.testing.assert_allclose(out_longer[1, :30], out[1, :30], atol=1e-5, rtol=1e-5)


def test_causal_model_ignores_future_tokens():
  cfg = lj.tiny(attention='linear', causal=True)
  model = lj.MLMModel(cfg)
  t = _tokens(pad_from=N)
  params = model.init(jax.random.key(0), t)
  t2 = t.at[:, 20:].set(7)
  a, b = model.apply(params, t), model.apply(params, t2)
  np.testing.assert_allclose(a[:, :20], b[:, :20], atol=1e-5)
  assert not np.allclose(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_classifier_shapes_and_parameter_count(pooling):
  cfg = lj.tiny(vocab_size=0, feature_dim=3, pad_id=None, num_classes=5, pooling=pooling)
  model = lj.Classifier(cfg)
  x = jnp.ones((2, 30, 3))
  params = model.init(jax.random.key(0), x)
  assert model.apply(params, x).shape == (2, 5)
  e = cfg.emb_dim
  encoder = expected_mlm_params(lj.tiny()) - (260 * e + 64 * e) - (e * e + e + 2 * e + 260)
  want = (3 * e + e) + 64 * e + encoder + (e * 5 + 5) + (e if pooling == 'cls' else 0)
  assert _num_params(params) == want
