"""'linear+window': g·window + (1 − g)·linear per head, g = sigmoid(a learned gate).

Against the independent composition of the float64 naive references (values,
and gradients in q, k, v and the gate), decoding against the parallel causal
form, the layers' exact parameter count (the gate adds `heads` per layer),
NNX == linen, LM decoding and generation, hybrids, and two training steps of a
tiny MLM and LM config.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import helpers
import linformer_jax as lj
from linformer_jax import generate
from linformer_jax import metrics
from linformer_jax import nnx as ljnnx
from linformer_jax import trainer
from linformer_jax.attention import naive

from test_generate import _decode_from, _tokens as _lm_tokens
from test_lm import tiny_lm_config
from test_nnx import _inputs, _twins

KIND = 'linear+window'
B, N, H, D, DV = 2, 23, 3, 4, 5  # N = 23: a multiple of neither the window nor the chunk
WINDOW, CHUNK = 4, 8
GATE = np.array([0.7, -1.3, 2.1])  # per-head logits away from the init, one per head


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  # As in test_lm.py: compilation dominates on CPU; most XLA optimizations halve it.
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


def _data(seed=0):
  rng = np.random.default_rng(seed)
  q, k = rng.normal(size=(2, B, N, H, D))
  v, cot = rng.normal(size=(2, B, N, H, DV))
  mask = rng.random((B, N)) > 0.3
  mask[1, :] = False
  mask[1, 6] = True  # a row with a single real key: most windows of row 1 hold none
  return q, k, v, mask, cot


def _out_and_grads(fn, args, cot):
  out, vjp = jax.vjp(fn, *args)
  return out, vjp(cot)


# ----------------------------------------------------------------------------- the kernel


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('dtype', [pytest.param(jnp.float64, marks=pytest.mark.slow), jnp.float32])
def test_values_and_gradients_equal_the_composition_of_naive_references(causal, dtype):
  q, k, v, mask, cot = _data()
  with jax.enable_x64(True):
    f64 = lambda x: jnp.asarray(x, jnp.float64)

    def composed(q, k, v, gate):  # written here from the two references, not from naive.linear_window
      g = jax.nn.sigmoid(gate)[:, None]
      return (g * naive.window(q, k, v, jnp.asarray(mask), causal, WINDOW) +
              (1 - g) * naive.linear(q, k, v, jnp.asarray(mask), causal))

    want, want_grads = _out_and_grads(composed, tuple(map(f64, (q, k, v, GATE))), f64(cot))
    kernel = lambda q, k, v, gate: lj.attend(KIND, q, k, v, key_mask=jnp.asarray(mask),
                                             causal=causal, window=WINDOW, gate=gate,
                                             chunk_size=CHUNK)
    args = tuple(jnp.asarray(x, dtype) for x in (q, k, v, GATE))
    got, grads = _out_and_grads(kernel, args, jnp.asarray(cot, dtype))
  assert got.dtype == dtype and got.shape == (B, N, H, DV)
  tol = 1e-10 if dtype == jnp.float64 else 2e-5
  np.testing.assert_allclose(got, want, atol=tol, rtol=tol)
  for name, g, w in zip(('dq', 'dk', 'dv', 'dgate'), grads, want_grads):
    assert g.shape == w.shape, name
    np.testing.assert_allclose(g, w, atol=tol * 5, rtol=tol * 5, err_msg=name)
  # The gate's gradient is real: each head's mix of two outputs that differ.
  assert np.abs(np.asarray(want_grads[3])).min() > 1e-3


def test_the_gate_mixes_each_head_between_the_two_kinds():
  q, k, v, mask, _ = _data()
  q, k, v, mask = (jnp.asarray(x, jnp.float32) for x in (q, k, v, mask))
  mask = mask > 0
  common = dict(key_mask=mask, causal=True, chunk_size=CHUNK)
  window = lj.attend('window', q, k, v, window=WINDOW, **common)
  linear = lj.attend('linear', q, k, v, **common)
  # Init (gate None = zeros): an even mix.
  even = lj.attend(KIND, q, k, v, window=WINDOW, **common)
  np.testing.assert_allclose(even, 0.5 * window + 0.5 * linear, atol=1e-6)
  np.testing.assert_array_equal(even, lj.attend(KIND, q, k, v, window=WINDOW, gate=jnp.zeros(H),
                                                **common))
  # Saturated gates select one kind per head: head 0 the window, head 1 the linear.
  gate = jnp.array([60.0, -60.0, 0.0])
  mixed = lj.attend(KIND, q, k, v, window=WINDOW, gate=gate, **common)
  np.testing.assert_allclose(mixed[:, :, 0], window[:, :, 0], atol=1e-6)
  np.testing.assert_allclose(mixed[:, :, 1], linear[:, :, 1], atol=1e-6)


def test_padding_has_no_influence():
  q, k, v, mask, _ = _data()
  mask = jnp.asarray(mask)
  for causal in (False, True):
    run = lambda k, v: lj.attend(KIND, q, k, v, key_mask=mask, causal=causal, window=WINDOW,
                                 gate=jnp.asarray(GATE, jnp.float32), chunk_size=CHUNK)
    noise = np.random.default_rng(5).normal(size=k.shape) * 100
    k2 = np.where(mask[..., None, None], k, noise)
    v2 = np.where(mask[..., None, None], v, noise[..., :1])
    np.testing.assert_allclose(run(k2.astype(np.float32), v2.astype(np.float32)),
                               run(k.astype(np.float32), v.astype(np.float32)), atol=1e-6)


def test_bad_gates_and_implementations_are_named():
  q, k, v, _, _ = _data()
  with pytest.raises(ValueError, match=r'gate must be the per-head gate logits, shape \[heads\] '
                                       r'= \(3,\); got shape \(2,\)'):
    lj.attend(KIND, q, k, v, gate=jnp.zeros(2))
  with pytest.raises(ValueError, match=r"gate= is for the gated kinds \('linear\+window',\), "
                                       "not 'linear'"):
    lj.attend('linear', q, k, v, gate=jnp.zeros(H))
  with pytest.raises(ValueError, match=r"gate= is for the gated kinds .* not 'window'"):
    lj.decode_step('window', lj.decode_init('window', B, H, D, DV, window=2), q[:, 0], k[:, 0],
                   v[:, 0], gate=jnp.zeros(H))
  with pytest.raises(ValueError, match=r"has no implementation 'scan'; valid: None .* \('blocked', 'jax'\)"):
    lj.attend(KIND, q, k, v, causal=True, implementation='scan')
  with pytest.raises(ValueError, match='window must be a positive int'):
    lj.attend(KIND, q, k, v, window=0)


# ----------------------------------------------------------------------------- decoding


def _steps(state, q, k, v, mask, gate, start=0):
  outs = []
  for i in range(start, q.shape[1]):
    out, state = lj.decode_step(KIND, state, q[:, i], k[:, i], v[:, i], key_mask=mask[:, i],
                                gate=gate)
    outs.append(out)
  return jnp.stack(outs, axis=1), state


@pytest.mark.parametrize('prompt_len', [0, 1, 9])
def test_decode_steps_and_prefill_equal_the_parallel_causal_form(prompt_len):
  q, k, v, mask, _ = _data()
  q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
  mask, gate = jnp.asarray(mask), jnp.asarray(GATE, jnp.float32)
  want = lj.attend(KIND, q, k, v, key_mask=mask, causal=True, window=WINDOW, gate=gate,
                   chunk_size=CHUNK)
  state = lj.causal_state(KIND, k[:, :prompt_len], v[:, :prompt_len],
                          key_mask=mask[:, :prompt_len], window=WINDOW)
  # Both components' states, O(window·d + d·d_v) whatever the length.
  template = lj.decode_init(KIND, B, H, D, DV, window=WINDOW)
  assert jax.tree.map(jnp.shape, state) == jax.tree.map(jnp.shape, template)
  assert state['key'].shape == (B, WINDOW, H, D) and state['s'].shape == (B, H, D, DV)
  if prompt_len:
    _, stepped = _steps(template, q[:, :prompt_len], k[:, :prompt_len], v[:, :prompt_len],
                        mask[:, :prompt_len], gate)
    assert sorted(state) == sorted(stepped) == ['key', 'length', 'm', 'mask', 's', 'value', 'z']
    for name in state:
      np.testing.assert_allclose(state[name], stepped[name], atol=1e-6, rtol=1e-6, err_msg=name)
  got, _ = _steps(state, q, k, v, mask, gate, start=prompt_len)
  np.testing.assert_allclose(got, want[:, prompt_len:], atol=2e-6, rtol=2e-5)


# ----------------------------------------------------------------------------- layers and models


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_the_gate_adds_exactly_heads_parameters_per_layer():
  cfg = lj.tiny(attention=KIND, window=4)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 24)), jnp.int32)
  params = lj.MLMModel(cfg).init(jax.random.key(0), tokens)['params']
  linear = lj.MLMModel(lj.tiny(attention='linear')).init(jax.random.key(0), tokens)['params']
  assert _count(params) == _count(linear) + cfg.num_layers * cfg.num_heads
  for i in range(cfg.num_layers):
    attention = params['encoder'][f'block_{i}']['attention']
    assert sorted(attention) == ['gate', 'key', 'out', 'query', 'value']
    np.testing.assert_array_equal(attention['gate'], np.zeros(cfg.num_heads))  # g = 0.5 at init
  # The attention layer alone: four Dense layers and the gate.
  e, h, d = cfg.emb_dim, cfg.num_heads, cfg.head_dim
  assert _count(params['encoder']['block_0']['attention']) == 4 * e * h * d + 3 * h * d + e + h


def test_nnx_matches_linen_with_the_gate_in_use():
  cfg = lj.tiny(attention=KIND, window=3, conv_width=3)
  x, key_mask = _inputs()
  params, want, module = _twins(lj.Encoder, ljnnx.Encoder, cfg, x, key_mask)
  assert _count(nnx.state(module, nnx.Param)) == _count(params)
  np.testing.assert_allclose(module(x, key_mask), want, atol=1e-5, rtol=1e-5)
  # The gate reached the kernel: other gates, other outputs.
  moved = jax.tree_util.tree_map_with_path(
      lambda path, p: p + 3.0 if 'gate' in str(path) else p, params)
  assert np.abs(np.asarray(lj.Encoder(cfg).apply(moved, x, key_mask) - want)).max() > 1e-3


@pytest.mark.parametrize('options', [
    pytest.param(dict(attention=KIND, window=4), marks=pytest.mark.slow),
    dict(num_layers=2, layer_attention='linear+window,softmax', window=3),
], ids=str)
def test_lm_decoding_equals_the_parallel_forward(options):
  cfg = lj.tiny(causal=True, conv_width=3, max_len=32, position='sinusoidal', **options)
  model = lj.LanguageModel(cfg)
  params = model.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))['params']
  # Gates away from 0, different per head and layer.
  keys = iter(jax.random.split(jax.random.key(3), 8))
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: jax.random.normal(next(keys), p.shape) if 'gate' in str(path) else p, params)
  tokens = _lm_tokens()
  full = model.apply({'params': params}, tokens)
  decoded, cache = _decode_from(model, params, tokens, 7)
  np.testing.assert_allclose(decoded, full, atol=2e-5)
  block = cache['layers']['block_0']['attention']
  assert block['key'].shape == (2, cfg.window, cfg.num_heads, cfg.head_dim)
  assert block['s'].shape == (2, cfg.num_heads, cfg.head_dim, cfg.head_dim)
  # Generation runs through prefill and decode steps; only a softmax layer bounds the context.
  ids = generate.generate(model, params, 'ab', num_tokens=20)
  assert ids.shape == (20,) and lj.context_limit(cfg) == (32 if 'softmax' in cfg.layer_kinds else None)


def test_model_config_reads_the_kind_from_the_table():
  cfg = lj.tiny(attention=KIND, window=5, causal=True)
  assert cfg.kernel_window == 5 and cfg.kind.gated and cfg.kind.decodes
  with pytest.raises(ValueError, match="position='rotary' needs attention in"):
    lj.tiny(attention=KIND, position='rotary')
  hybrid = lj.tiny(num_layers=4, layer_attention='linear,linear,linear,linear+window')
  assert hybrid.layer_config(3).kernel_window == hybrid.window
  assert hybrid.layer_config(0).kernel_window is None


# ----------------------------------------------------------------------------- training


def _two_steps(config, workdir):
  trainer.train_and_evaluate(config, workdir)
  records = metrics.read_metrics(workdir)
  assert [r['step'] for r in records] == [0, 1, 2]
  assert np.isfinite(records[-1]['train_loss']) and np.isfinite(records[-1]['eval_loss'])
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']


_TWO_STEPS = {'num_train_steps': 2, 'warmup_steps': 1, 'log_every_steps': 1,
              'eval_every_steps': 2, 'checkpoint_every_steps': 2, 'num_eval_batches': 1}


@pytest.mark.slow
def test_tiny_mlm_config_trains_two_steps(tmp_path):
  config = helpers.load('mlm.py', helpers.tiny_overrides(
      'mlm.py', **_TWO_STEPS, **{'model.attention': KIND, 'model.window': 8, 'seq_len': 32,
                                 'batch_size': 4}))
  _two_steps(config, str(tmp_path))


@pytest.mark.slow
def test_tiny_lm_config_trains_two_steps(tmp_path):
  config = tiny_lm_config(tmp_path, **{'model.attention': KIND, 'model.window': 8})
  _two_steps(config, str(tmp_path / 'run'))
