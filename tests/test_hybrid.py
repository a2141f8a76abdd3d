"""Hybrid models (ModelConfig.layer_attention): one attention kind per layer.

The config and its checks, exact parameter counts derived from single-kind
models, each block being its kind's block, NNX == linen, MLM forward, LM
decoding == the parallel forward, and configs/lm_hybrid.py and configs/mlm_hybrid.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import linformer_jax as lj
from linformer_jax import generate
from linformer_jax import models
from linformer_jax import nnx as ljnnx
from linformer_jax import tasks

from test_generate import _decode_from, _tokens as _lm_tokens
from test_lm import load_config
from test_nnx import _inputs, _twins

KEY = jax.random.key(0)


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  # As in test_lm.py: compilation dominates on CPU; most XLA optimizations halve it.
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _mlm_tokens(b=2, n=24, pad_from=18):
  t = np.random.default_rng(0).integers(0, 256, size=(b, n)).astype(np.int32)
  t[1, pad_from:] = 256  # pad_id of the default config
  return jnp.asarray(t)


# ----------------------------------------------------------------------------- config


def test_layers_repeat_the_pattern_and_each_layer_config_is_single_kind():
  cfg = lj.tiny(num_layers=5, layer_attention='linear, window', causal=True, window=4)
  assert cfg.hybrid and cfg.layer_kinds == ('linear', 'window', 'linear', 'window', 'linear')
  assert [k.name for k in cfg.layer_records] == list(cfg.layer_kinds)
  assert cfg.layer_config(1) == lj.tiny(num_layers=5, attention='window', causal=True, window=4)
  assert cfg.layer_config(1).kernel_window == 4 and cfg.layer_config(0).kernel_window is None
  with pytest.raises(ValueError, match='one attention kind per layer'):
    cfg.kind  # pylint: disable=pointless-statement
  plain = lj.tiny(attention='softmax')
  assert not plain.hybrid and plain.layer_kinds == ('softmax', 'softmax')
  assert plain.layer_config(1) is plain and plain.kind is lj.TABLE['softmax']
  assert lj.tiny(layer_attention='none,linear').layer_records == (None, lj.TABLE['linear'])


def test_rotary_rotates_only_the_layers_whose_kind_keeps_it():
  cfg = lj.tiny(num_layers=3, layer_attention='linear,softmax,window', position='rotary', causal=True)
  assert [cfg.layer_config(i).position for i in range(3)] == ['none', 'rotary', 'rotary']
  learned = lj.tiny(layer_attention='linear,softmax')
  assert [learned.layer_config(i).position for i in range(2)] == ['learned', 'learned']


@pytest.mark.parametrize('options, match', [
    (dict(layer_attention='linear,sofmax'), r"entry 1 'sofmax' is not an attention kind; valid: \("),
    (dict(layer_attention='linear,,softmax', num_layers=3), "entry 1 '' is not an attention kind"),
    (dict(layer_attention='linear,linear,softmax'), 'names 3 layers but num_layers=2'),
    (dict(layer_attention='linear,linformer', causal=True),
     r"layer 1 \('linformer'\): linformer attention has no causal form"),
    (dict(layer_attention='linear,elu_linear', position='rotary'),
     r"'rotary' in a hybrid needs at least one layer of a kind in \('softmax', 'window'\)"),
    (dict(layer_attention='softmax,linear', implementation='xla'),
     r"layer 1 \('linear'\): implementation 'xla' is not one of 'linear' attention's"),
], ids=lambda o: str(o) if isinstance(o, dict) else None)
def test_bad_patterns_are_named(options, match):
  with pytest.raises(ValueError, match=match):
    lj.tiny(**options)


# ----------------------------------------------------------------------------- parameters


def _single_kind_params(kind, **options):
  return lj.MLMModel(lj.tiny(attention=kind, **options)).init(KEY, _mlm_tokens())['params']


@pytest.mark.parametrize('pattern, sharing, pinned', [
    ('linear,softmax,none,window', 'headwise', 13556),
    ('linformer,linear,linformer,softmax', 'headwise', None),
    ('linformer,linear,linformer,softmax', 'layerwise', None),
])
def test_mlm_parameters_are_the_sum_of_their_layers(pattern, sharing, pinned):
  cfg = lj.tiny(num_layers=4, layer_attention=pattern, linformer_sharing=sharing)
  params = lj.MLMModel(cfg).init(KEY, _mlm_tokens())['params']
  single = {kind: _single_kind_params(kind, linformer_sharing=sharing) for kind in set(cfg.layer_kinds)}
  for i, kind in enumerate(cfg.layer_kinds):  # block i has the shapes of kind's block
    shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
    assert shapes(params['encoder'][f'block_{i}']) == shapes(single[kind]['encoder']['block_0'])
  # Outside the blocks: a 2-layer linear model's rest, plus one E = F if 'layerwise' linformer.
  linear = single.get('linear') or _single_kind_params('linear')
  rest = _count(linear) - 2 * _count(linear['encoder']['block_0'])
  shared = cfg.linformer_k * cfg.max_len if sharing == 'layerwise' else 0
  blocks = sum(_count(single[kind]['encoder']['block_0']) for kind in cfg.layer_kinds)
  assert _count(params) == rest + shared + blocks
  assert ('linformer_proj' in params['encoder']) == (sharing == 'layerwise')
  if pinned is not None:
    assert _count(params) == pinned
  logits = lj.MLMModel(cfg).apply({'params': params}, _mlm_tokens())
  assert logits.shape == (2, 24, cfg.vocab_size) and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize('kind', ['softmax', 'window', 'none'])
def test_a_one_entry_pattern_is_the_single_kind_model(kind):
  tokens = _mlm_tokens()
  hybrid, plain = lj.MLMModel(lj.tiny(layer_attention=kind)), lj.MLMModel(lj.tiny(attention=kind))
  params = plain.init(KEY, tokens)
  assert jax.tree.all(jax.tree.map(np.array_equal, hybrid.init(KEY, tokens), params))
  np.testing.assert_array_equal(hybrid.apply(params, tokens), plain.apply(params, tokens))


def test_each_block_is_exactly_its_kinds_block():
  cfg = lj.tiny(layer_attention='linear,softmax')
  x, key_mask = _inputs()
  params = lj.Encoder(cfg).init(KEY, x, key_mask)['params']
  got = lj.Encoder(cfg).apply({'params': params}, x, key_mask)
  y = x
  for i, kind in enumerate(('linear', 'softmax')):
    y = lj.EncoderBlock(lj.tiny(attention=kind)).apply({'params': params[f'block_{i}']}, y, key_mask)
  y = nn.LayerNorm().apply({'params': params['final_norm']}, y)
  np.testing.assert_allclose(got, y, atol=1e-6, rtol=1e-6)
  # The kinds matter: the same parameters in a linear-only encoder give other outputs.
  linear = lj.Encoder(lj.tiny(attention='linear')).apply({'params': params}, x, key_mask)
  assert np.abs(np.asarray(linear - got)).max() > 1e-3


# ----------------------------------------------------------------------------- NNX


@pytest.mark.parametrize('options', [
    dict(num_layers=4, layer_attention='linear,softmax,none,window', conv_width=3, window=4),
    dict(num_layers=3, layer_attention='linformer,linear', linformer_sharing='layerwise'),
    dict(layer_attention='linformer,softmax', linformer_sharing='key-value'),
    dict(layer_attention='elu_linear,softmax', causal=True, position='rotary'),
], ids=str)
def test_nnx_encoder_matches_linen(options):
  cfg = lj.tiny(**options)
  x, key_mask = _inputs()
  params, want, module = _twins(lj.Encoder, ljnnx.Encoder, cfg, x, key_mask)
  assert _count(nnx.state(module, nnx.Param)) == _count(params)
  np.testing.assert_allclose(module(x, key_mask), want, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- LM and decoding


@pytest.mark.parametrize('options', [
    dict(layer_attention='linear,softmax'),
    dict(layer_attention='window,linear', window=4, position='sinusoidal'),
    dict(layer_attention='none,softmax', position='rotary'),
], ids=str)
def test_lm_decoding_equals_the_parallel_forward(options):
  cfg = lj.tiny(causal=True, conv_width=3, max_len=32, **options)
  model = lj.LanguageModel(cfg)
  params = model.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))['params']
  tokens = _lm_tokens()
  full = model.apply({'params': params}, tokens)
  decoded, cache = _decode_from(model, params, tokens, 7)
  np.testing.assert_allclose(decoded, full, atol=2e-5)
  # Each layer keeps its own kind's state: a KV cache of max_len slots, a ring, a linear state.
  for i, kind in enumerate(cfg.layer_kinds):
    block = cache['layers'][f'block_{i}']
    assert ('attention' in block) == (kind != 'none')
    if kind != 'none':
      template = lj.decode_init(kind, 2, cfg.num_heads, cfg.head_dim, cfg.head_dim,
                                max_len=cfg.max_len, window=cfg.layer_config(i).kernel_window)
      assert jax.tree.map(jnp.shape, block['attention']) == jax.tree.map(jnp.shape, template)


def test_context_limit_is_bounded_when_any_layer_is():
  bounded = lj.tiny(layer_attention='linear,softmax', causal=True, position='sinusoidal', max_len=32)
  assert models.context_limit(bounded) == 32
  assert models.context_limit(lj.tiny(layer_attention='window,linear', causal=True,
                                      position='sinusoidal')) is None
  # generate names the layer kind that bounds it, before computing anything.
  model = lj.LanguageModel(bounded)
  with pytest.raises(ValueError, match="softmax attention's decoding state"):
    generate.generate(model, None, 'x' * 20, num_tokens=20)


def test_lm_hybrid_config_builds_its_pattern():
  model = tasks.create(load_config('lm_hybrid.py')).model
  assert isinstance(model, lj.LanguageModel)
  assert model.config.layer_kinds == ('softmax', 'linear', 'linear', 'linear')
  assert model.config.causal and model.config.conv_width == 4


def test_mlm_hybrid_config_builds_its_pattern():
  model = tasks.create(load_config('mlm_hybrid.py')).model
  assert isinstance(model, lj.MLMModel)
  assert model.config.layer_kinds == ('softmax', 'linear', 'linear', 'linear')
  assert not model.config.causal and model.config.conv_width == 5
