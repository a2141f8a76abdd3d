"""Sliding-window attention: against a masked n×n float64 reference, recurrent
decoding against the parallel causal form, no n×n array in the blocked path,
window checks, and the models with attention='window'."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import linformer_jax as lj
from linformer_jax import models
from linformer_jax import nnx as ljnnx
from linformer_jax.attention import window as window_lib
from test_attention import _largest_intermediate

B, N, H, D, DV = 2, 13, 2, 4, 3  # N = 13 is a multiple of no window below but 1 and 13


def _data(dtype, n=N, seed=0):
  rng = np.random.default_rng(seed)
  q, k = rng.normal(size=(2, B, n, H, D))
  v = rng.normal(size=(B, n, H, DV))
  mask = rng.random((B, n)) > 0.3
  mask[1, :3] = False  # leading padding: queries with no real key in a short causal window
  mask[0, 5:9] = False  # a gap as long as a window of 4: bidirectional queries with no key either
  cot = rng.normal(size=(B, n, H, DV))
  cast = lambda x: jnp.asarray(x, dtype)
  return cast(q), cast(k), cast(v), jnp.asarray(mask), cast(cot)


def _reference(q, k, v, mask, causal, window):
  """float64 softmax over allowed[b, i, j]: real key j within the window of query i."""
  n = q.shape[1]
  offset = np.arange(n)[:, None] - np.arange(n)[None]
  band = (offset >= 0) & (offset < window) if causal else np.abs(offset) < window
  allowed = (band[None] & mask[:, None, :])[:, None]  # [b, 1, i, j]
  scores = jnp.einsum('bihd,bjhd->bhij', q, k) / np.sqrt(q.shape[-1])
  weights = jax.nn.softmax(jnp.where(allowed, scores, -1e300), axis=-1)
  weights = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), weights, 0.0)
  return jnp.einsum('bhij,bjhe->bihe', weights, v)


def _out_and_grads(fn, q, k, v, cot):
  out, vjp = jax.vjp(fn, q, k, v)
  return out, vjp(cot)


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)


@pytest.mark.parametrize('dtype', ['float32', pytest.param('float64', marks=pytest.mark.slow)])
@pytest.mark.parametrize('implementation', lj.TABLE['window'].implementations)
@pytest.mark.parametrize('causal', [False, True])
def test_values_and_gradients_match_masked_reference(causal, implementation, dtype):
  value_tol, grad_tol = {'float64': (1e-12, 1e-12), 'float32': (1e-5, 1e-4)}[dtype]
  with jax.enable_x64(True):
    q, k, v, mask, cot = _data(dtype)
    f64 = lambda x: x.astype(jnp.float64)
    for window in (1, 2, 4, 5, N, 40):  # 40 >= N: full softmax attention
      got_out, got_grads = _out_and_grads(
          lambda q, k, v: lj.window_attention(q, k, v, key_mask=mask, causal=causal, window=window,
                                              implementation=implementation,
                                              precision=jax.lax.Precision.HIGHEST), q, k, v, cot)
      want_out, want_grads = _out_and_grads(
          lambda q, k, v: _reference(q, k, v, mask, causal, window), f64(q), f64(k), f64(v), f64(cot))
      assert got_out.dtype == jnp.dtype(dtype) and got_out.shape == (B, N, H, DV)
      assert _rel(got_out, want_out) <= value_tol, f'window={window}: {_rel(got_out, want_out):.1e}'
      for name, got, want in zip(('dq', 'dk', 'dv'), got_grads, want_grads):
        assert np.isfinite(np.asarray(got)).all(), f'{name}, window={window}'
        assert _rel(got, want) <= grad_tol, f'{name}, window={window}: {_rel(got, want):.1e}'


@pytest.mark.parametrize('causal', [False, True])
def test_window_at_least_n_is_full_softmax_attention(causal):
  q, k, v, mask, _ = _data(jnp.float32)
  want = lj.softmax_attention(q, k, v, key_mask=mask, causal=causal)
  for window in (N, N + 1, 1000):
    got = lj.window_attention(q, k, v, key_mask=mask, causal=causal, window=window)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def test_causal_window_of_one_returns_each_real_tokens_own_value():
  q, k, v, mask, _ = _data(jnp.float32)
  for implementation in ('blocked', 'jax'):
    got = lj.window_attention(q, k, v, key_mask=mask, causal=True, window=1,
                              implementation=implementation)
    np.testing.assert_array_equal(got, jnp.where(mask[:, :, None, None], v, 0.0))


def test_bfloat16_computes_in_bfloat16_with_float32_softmax():
  q, k, v, mask, _ = _data(jnp.float32)
  bf = lambda x: x.astype(jnp.bfloat16)
  for implementation in ('blocked', 'jax'):
    got = lj.window_attention(bf(q), bf(k), bf(v), key_mask=mask, window=4,
                              implementation=implementation)
    assert got.dtype == jnp.bfloat16
    with jax.enable_x64(True):
      want = _reference(*(bf(x).astype(jnp.float64) for x in (q, k, v)), mask, False, 4)
    assert _rel(got, want) <= 2e-2


def test_blocked_path_has_no_n_by_n_array():
  n, h, d, window = 4096, 2, 16, 64
  x = jax.ShapeDtypeStruct((1, n, h, d), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, n), jnp.bool_)
  for causal in (False, True):
    fn = lambda q, k, v, m: lj.window_attention(q, k, v, key_mask=m, causal=causal, window=window,
                                                implementation='blocked')
    loss = lambda q, k, v, m: fn(q, k, v, m).sum()
    for jaxpr in (jax.make_jaxpr(fn)(x, x, x, mask).jaxpr,
                  jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(x, x, x, mask).jaxpr):
      # The largest is the [heads, n, 3·window] band of scores: 3·window / n = 1/21 of n×n.
      assert _largest_intermediate(jaxpr) <= 3 * h * n * window


# --- Recurrent decoding from a ring of the last `window` keys and values ---

def _steps(state, q, k, v, mask, start=0):
  """Outputs [b, n - start, h, dv] and the state after decode_step at positions start..n-1."""
  outs = []
  for i in range(start, q.shape[1]):
    out, state = lj.decode_step('window', state, q[:, i], k[:, i], v[:, i], key_mask=mask[:, i])
    outs.append(out)
  return jnp.stack(outs, axis=1), state


@pytest.mark.parametrize('window', [1, 5, pytest.param(4, marks=pytest.mark.slow),
                                    pytest.param(40, marks=pytest.mark.slow)])
def test_decode_steps_equal_parallel_causal(window):
  q, k, v, mask, _ = _data(jnp.float32)
  state = lj.decode_init('window', B, H, D, DV, window=window)
  assert state['key'].shape == (B, window, H, D)  # O(window·d), whatever the length
  got, _ = _steps(state, q, k, v, mask)
  want = lj.attend('window', q, k, v, key_mask=mask, causal=True, window=window)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize('prompt_len', [1, 3, 4, 9, N])
def test_prefill_state_equals_steps_and_continues_them(prompt_len):
  window = 4
  q, k, v, mask, _ = _data(jnp.float32)
  prefilled = lj.causal_state('window', k[:, :prompt_len], v[:, :prompt_len],
                              key_mask=mask[:, :prompt_len], window=window)
  _, stepped = _steps(lj.decode_init('window', B, H, D, DV, window=window), q[:, :prompt_len],
                      k[:, :prompt_len], v[:, :prompt_len], mask[:, :prompt_len])
  for name in ('key', 'value', 'mask', 'length'):  # the same ring: slot p % window holds position p
    np.testing.assert_array_equal(prefilled[name], stepped[name], err_msg=name)
  if prompt_len < N:
    got, _ = _steps(prefilled, q, k, v, mask, start=prompt_len)
    want = lj.attend('window', q, k, v, key_mask=mask, causal=True, window=window)[:, prompt_len:]
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5)


def test_empty_prompt_gives_the_empty_ring():
  k, v = jnp.zeros((B, 0, H, D)), jnp.zeros((B, 0, H, DV))
  state = lj.causal_state('window', k, v, window=3)
  assert state['key'].shape == (B, 3, H, D) and not state['mask'].any() and int(state['length']) == 0


# --- Checks ---

@pytest.mark.parametrize('window', [0, -3, 2.5, True, '8', None])
def test_bad_window_is_a_value_error_naming_it(window):
  q, k, v, _, _ = _data(jnp.float32)
  match = f'window must be a positive int .* got {window!r}'.replace('(', r'\(').replace(')', r'\)')
  for fn in (lambda: lj.window_attention(q, k, v, window=window),
             lambda: window_lib.decode_init(B, H, D, DV, dtype=jnp.float32, window=window)):
    with pytest.raises(ValueError, match=match):
      fn()


def test_window_is_for_windowed_kinds_and_positions():
  q, k, v, _, _ = _data(jnp.float32)
  with pytest.raises(ValueError, match=r"window=8 is for the windowed kinds \('window', 'linear\+window'\), not 'softmax'"):
    lj.attend('softmax', q, k, v, window=8)
  with pytest.raises(ValueError, match='q_len must equal kv_len'):
    lj.window_attention(q[:, :5], k, v)
  with pytest.raises(ValueError, match='window must be positive, got 0'):
    lj.tiny(attention='window', window=0)


# --- Models with attention='window' ---

def test_mlm_model_runs_and_sees_only_its_window():
  cfg = lj.tiny(attention='window', window=3, max_len=32)
  model = lj.MLMModel(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 20)), jnp.int32)
  params = model.init(jax.random.key(0), tokens)
  logits = model.apply(params, tokens)
  assert logits.shape == (2, 20, cfg.vocab_size) and np.isfinite(logits).all()
  # Two layers of window 3 reach 4 positions each way: position 0 ignores token 10 onward.
  changed = model.apply(params, tokens.at[:, 10:].set(7))
  np.testing.assert_allclose(changed[:, :6], logits[:, :6], atol=1e-5)
  assert np.abs(np.asarray(changed[:, 6:] - logits[:, 6:])).max() > 1e-3


def test_nnx_encoder_matches_linen_with_a_window():
  cfg = lj.tiny(attention='window', window=3)
  x = jax.random.normal(jax.random.key(0), (2, 11, cfg.emb_dim))
  key_mask = jnp.arange(11)[None, :] < jnp.array([[11], [6]])
  params = lj.Encoder(cfg).init(jax.random.key(1), x, key_mask)
  module = ljnnx.load_linen_params(ljnnx.Encoder(cfg, rngs=nnx.Rngs(2)), params)
  want = lj.Encoder(cfg).apply(params, x, key_mask)
  np.testing.assert_allclose(module(x, key_mask), want, atol=1e-5, rtol=1e-5)
  wider = lj.Encoder(lj.tiny(attention='window', window=64)).apply(params, x, key_mask)
  assert np.abs(np.asarray(wider - want)).max() > 1e-3  # the window reached the kernel


@pytest.mark.parametrize('position', ['rotary', pytest.param('learned', marks=pytest.mark.slow)])
def test_language_model_prefill_and_decode_equal_parallel_logits(position):
  cfg = lj.tiny(attention='window', window=4, causal=True, conv_width=3, max_len=32,
                position=position)
  model = lj.LanguageModel(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 20)), jnp.int32)
  params = model.init(jax.random.key(1), tokens[:, :4])['params']
  full = model.apply({'params': params}, tokens)
  assert models.context_limit(cfg) == (32 if position == 'learned' else None)
  logits, cache = model.apply({'params': params}, tokens[:, :9], method=lj.LanguageModel.prefill)
  step = jax.jit(lambda token, cache: model.apply({'params': params}, token, cache,
                                                  method=lj.LanguageModel.decode))
  out = [logits]
  for i in range(9, tokens.shape[1]):
    logits, cache = step(tokens[:, i], cache)
    out.append(logits[:, None])
  np.testing.assert_allclose(jnp.concatenate(out, axis=1), full, atol=2e-5)
  # Each layer's state is its ring of `window` keys, whatever the length decoded.
  assert cache['layers']['block_0']['attention']['key'].shape == (2, 4, cfg.num_heads, cfg.head_dim)
