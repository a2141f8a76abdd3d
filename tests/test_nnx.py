"""NNX modules: same weights give the linen modules' outputs, same parameter counts, training."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import linformer_jax as lj
from linformer_jax import nnx as ljnnx
from linformer_jax.model_config import ATTENTIONS, LINFORMER_SHARING

B, N, EMB = 2, 20, 16  # lj.tiny has emb_dim 16
# Linformer's sharing modes other than 'headwise' run in the whole suite (slow).
CASES = [(a, 'headwise') for a in ATTENTIONS if a != 'linformer'] + [
    pytest.param('linformer', s, marks=[] if s == 'headwise' else [pytest.mark.slow])
    for s in LINFORMER_SHARING]


def _inputs(n=N):
  x = jax.random.normal(jax.random.key(0), (B, n, EMB))
  key_mask = jnp.arange(n)[None, :] < jnp.array([[n], [n - 7]])  # row 1 ends in 7 pads
  return x, key_mask


def _count(tree):
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def _twins(linen_cls, nnx_cls, cfg, *inputs, **kwargs):
  """(linen params, linen output, NNX module loaded with those params)."""
  linen = linen_cls(cfg)
  params = linen.init(jax.random.key(1), *inputs, **kwargs)
  # Init makes every LayerNorm and bias alike (ones, zeros): noise tells them apart.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(6), len(leaves))
  params = tree.unflatten([p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  # A different seed: only the copy can make the NNX outputs match.
  module = ljnnx.load_linen_params(nnx_cls(cfg, rngs=nnx.Rngs(2)), params)
  return params, linen.apply(params, *inputs, **kwargs), module


@pytest.mark.parametrize('attention,sharing', CASES)
def test_encoder_matches_linen(attention, sharing):
  cfg = lj.tiny(attention=attention, linformer_sharing=sharing)
  x, key_mask = _inputs()
  params, want, module = _twins(lj.Encoder, ljnnx.Encoder, cfg, x, key_mask)
  assert _count(nnx.state(module, nnx.Param)) == _count(params)
  got = module(x, key_mask)
  assert got.shape == (B, N, EMB)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_bfloat16_matches_linen_exactly():
  cfg = lj.tiny(attention='linear', conv_width=3, dtype='bfloat16')
  x, key_mask = _inputs()  # float32 x: each first LayerNorm casts it
  _, want, module = _twins(lj.Encoder, ljnnx.Encoder, cfg, x, key_mask)
  got = module(x, key_mask)
  assert got.dtype == want.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got.astype(jnp.float32), want.astype(jnp.float32))


@pytest.mark.parametrize('attention', ['softmax', 'linformer', 'linear', 'elu_linear'])
def test_attention_matches_linen(attention):
  # 'layerwise' projections come from outside the module, as the Encoder passes them.
  sharing = 'layerwise' if attention == 'linformer' else 'headwise'
  cfg = lj.tiny(attention=attention, linformer_sharing=sharing)
  x, key_mask = _inputs()
  proj = jax.random.normal(jax.random.key(3), (cfg.linformer_k, cfg.max_len)) / 8
  shared = proj if attention == 'linformer' else None
  params, want, module = _twins(lj.MultiHeadAttention, ljnnx.MultiHeadAttention, cfg, x,
                                key_mask, shared)
  assert _count(nnx.state(module, nnx.Param)) == _count(params) == 4 * (EMB * EMB + EMB)
  np.testing.assert_allclose(module(x, key_mask, shared), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('options', [
    dict(attention='linear', causal=True),
    dict(attention='elu_linear', causal=True),
    dict(attention='softmax', causal=True, position='rotary'),
    dict(attention='linear', conv_width=3),
    dict(attention='linear', conv_width=4, causal=True),
    dict(attention='none', conv_width=3),
    dict(attention='linear', conv_width=3, conv_dims=2, grid_width=4),
], ids=str)
def test_block_options_match_linen(options):
  cfg = lj.tiny(**options)
  n = 17 if cfg.conv_dims == 2 else N  # one leading token, then a 4 x 4 grid
  x, key_mask = _inputs(n)
  params, want, module = _twins(lj.EncoderBlock, ljnnx.EncoderBlock, cfg, x, key_mask)
  assert _count(nnx.state(module, nnx.Param)) == _count(params)
  np.testing.assert_allclose(module(x, key_mask), want, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_tokens():
  cfg = lj.tiny(attention='linear', conv_width=3)
  module = ljnnx.Encoder(cfg, rngs=nnx.Rngs(0))
  x, key_mask = _inputs()
  noisy = jnp.where(key_mask[..., None], x, 100.0 * jax.random.normal(jax.random.key(4), x.shape))
  got, want = module(noisy, key_mask), module(x, key_mask)
  np.testing.assert_allclose(got[1, :N - 7], want[1, :N - 7], atol=1e-5, rtol=1e-5)
  assert not np.allclose(got[1, N - 7:], want[1, N - 7:])  # the perturbation reached the model


def test_dropout_follows_nnx_modes():
  cfg = lj.tiny(attention='linear', dropout_rate=0.5)
  x, key_mask = _inputs()
  _, want, module = _twins(lj.Encoder, ljnnx.Encoder, cfg, x, key_mask)  # linen: deterministic
  assert not np.allclose(module(x, key_mask), want, atol=1e-3)  # NNX modules start in train mode
  np.testing.assert_allclose(module(x, key_mask, deterministic=True), want, atol=1e-5, rtol=1e-5)
  module.eval()
  np.testing.assert_allclose(module(x, key_mask), want, atol=1e-5, rtol=1e-5)


def test_clear_errors():
  x, key_mask = _inputs()
  cfg = lj.tiny(attention='linformer', linformer_sharing='layerwise')
  with pytest.raises(ValueError, match="'layerwise' needs the encoder's shared_proj"):
    ljnnx.MultiHeadAttention(cfg, rngs=nnx.Rngs(0))(x, key_mask)
  with pytest.raises(ValueError, match='input width 8 != emb_dim=16'):
    ljnnx.EncoderBlock(lj.tiny(), rngs=nnx.Rngs(0))(x[..., :8])
  linen_params = lj.EncoderBlock(lj.tiny(conv_width=3)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"params: linen has \[.*'local'.*same ModelConfig"):
    ljnnx.load_linen_params(ljnnx.EncoderBlock(lj.tiny(), rngs=nnx.Rngs(0)), linen_params)
  linen_params = lj.Encoder(lj.tiny(attention='linformer', max_len=32)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r'block_0/attention/linformer_e: linen shape \(8, 32\)'):
    ljnnx.load_linen_params(ljnnx.Encoder(lj.tiny(attention='linformer'), rngs=nnx.Rngs(0)),
                            linen_params)


def test_trains_with_nnx_optimizer():
  cfg = lj.tiny(attention='linear', conv_width=3)
  model = ljnnx.Encoder(cfg, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  x, key_mask = _inputs()
  target = jax.random.normal(jax.random.key(5), x.shape)

  @nnx.jit
  def step(model, optimizer):
    def loss_fn(model):
      w = key_mask[..., None]
      return jnp.sum(w * (model(x, key_mask) - target) ** 2) / (w.sum() * EMB)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss, grads

  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  losses = []
  for _ in range(5):
    loss, grads = step(model, optimizer)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    losses.append(float(loss))
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  after = nnx.state(model, nnx.Param)
  assert not np.allclose(before['final_norm']['scale'][...], after['final_norm']['scale'][...])
