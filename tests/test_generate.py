"""Incremental decoding (LanguageModel.prefill / decode) and linformer_jax.generate."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linformer_jax as lj
from linformer_jax import generate
from linformer_jax.data import text as data
from linformer_jax import models
from linformer_jax import trainer as train
from linformer_jax import workdir as workdir_lib
from test_lm import KINDS, REPO, load_config, tiny_lm_config

PREFILL, DECODE = models.LanguageModel.prefill, models.LanguageModel.decode


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  # Compilation dominates these tests on CPU; most XLA optimizations halve it.
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


def _model(kind='linear', **overrides):
  cfg = lj.tiny(**{'attention': kind, 'causal': True, 'conv_width': 3, 'max_len': 32, **overrides})
  model = lj.LanguageModel(cfg)
  params = model.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))['params']
  return model, params


def _tokens(n=20, batch=2):
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, n)), jnp.int32)


def _decode_from(model, params, tokens, prompt_len):
  """Logits [batch, n, vocab]: prefill of tokens[:, :prompt_len], then one decode step each."""
  logits, cache = model.apply({'params': params}, tokens[:, :prompt_len], method=PREFILL)
  step = jax.jit(lambda token, cache: model.apply({'params': params}, token, cache, method=DECODE))
  out = [logits]
  for i in range(prompt_len, tokens.shape[1]):
    logits, cache = step(tokens[:, i], cache)
    out.append(logits[:, None])
  return jnp.concatenate(out, axis=1), cache


@pytest.mark.parametrize('kind, position', [(k, 'learned') for k in KINDS] +
                         [('linear', 'sinusoidal')])
def test_prefill_plus_steps_equals_all_steps_and_the_parallel_forward(kind, position):
  model, params = _model(kind, position=position)
  tokens = _tokens()
  full = model.apply({'params': params}, tokens)
  all_steps, cache = _decode_from(model, params, tokens, 1)
  prefilled, _ = _decode_from(model, params, tokens, 13)
  np.testing.assert_allclose(all_steps, full, atol=2e-5)
  np.testing.assert_allclose(prefilled, all_steps, atol=2e-5)
  assert int(cache['position']) == tokens.shape[1]


def test_rotary_softmax_decodes_at_absolute_positions():
  model, params = _model('softmax', position='rotary')
  tokens = _tokens()
  prefilled, _ = _decode_from(model, params, tokens, 7)
  np.testing.assert_allclose(prefilled, model.apply({'params': params}, tokens), atol=2e-5)


def test_padding_in_the_prompt_is_masked_while_decoding():
  model, params = _model('linear')
  tokens = np.array(_tokens())
  tokens[1, 5:9] = data.PAD_ID
  tokens = jnp.asarray(tokens)
  decoded, _ = _decode_from(model, params, tokens, 3)
  np.testing.assert_allclose(decoded, model.apply({'params': params}, tokens), atol=2e-5)


def test_decode_needs_a_causal_model():
  model = lj.LanguageModel(lj.tiny())  # causal=False
  with pytest.raises(ValueError, match='causal=True'):
    model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), method=PREFILL)


def _allowed_argmax(logits):
  ids = np.arange(logits.shape[-1])
  return int(np.argmax(np.where((ids < 256) | (ids == data.EOS_ID), logits, -np.inf)))


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('prompt', ['def f(', pytest.param('', marks=pytest.mark.slow)])
def test_greedy_generation_is_the_argmax_of_the_parallel_forward_at_every_step(kind, prompt):
  model, params = _model(kind)
  ids = generate.generate(model, params, prompt, 12)
  assert ids.shape == (12,)
  prefix = [data.CLS_ID] + list(data.encode(prompt))  # An empty prompt starts from CLS alone.
  # One parallel forward over the whole sequence: its logits at position i are
  # those of the sequence so far (test_lm checks they ignore later tokens).
  seq = jnp.asarray([prefix + list(ids)], jnp.int32)
  logits = np.asarray(model.apply({'params': params}, seq)[0])
  for t, token in enumerate(ids):
    assert int(token) == _allowed_argmax(logits[len(prefix) - 1 + t]), t


def test_sampling_is_seeded_and_draws_only_bytes_and_eos():
  model, params = _model()
  a = generate.generate(model, params, 'x', 25, temperature=1.5, seed=3)
  assert np.array_equal(a, generate.generate(model, params, 'x', 25, temperature=1.5, seed=3))
  assert not np.array_equal(a, generate.generate(model, params, 'x', 25, temperature=1.5, seed=4))
  assert np.all((a < 256) | (a == data.EOS_ID))
  # top_k=1 keeps only the most likely token: greedy, whatever the temperature.
  np.testing.assert_array_equal(generate.generate(model, params, 'x', 10, temperature=2.0, top_k=1),
                                generate.generate(model, params, 'x', 10))


def test_top_k_restricts_sampling_to_the_k_most_likely():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 260)), jnp.float32)
  ids = np.arange(260)
  top3 = set(np.argsort(np.where((ids < 256) | (ids == data.EOS_ID), logits[0], -np.inf))[-3:])
  drawn = {int(generate.sample(logits, jax.random.key(s), temperature=5.0, top_k=3)[0])
           for s in range(60)}
  assert drawn == top3


def test_length_limits_raise_before_decoding():
  model, params = _model(position='learned')  # max_len 32: CLS + 31 tokens
  with pytest.raises(ValueError, match='prompt is 40 bytes; this model takes at most 31'):
    generate.generate(model, params, 'a' * 40, 1)
  assert generate.generate(model, params, 'a' * 10, 22).shape == (22,)  # 32 tokens fed in all
  with pytest.raises(ValueError, match=r'learned positions, max_len=32\). Ask for at most 22'):
    generate.generate(model, params, 'a' * 10, 23)
  with pytest.raises(ValueError, match="softmax attention's decoding state"):
    generate.generate(*_model('softmax', position='sinusoidal'), 'a', 40)
  for bad, match in [({'num_tokens': -1}, 'num_tokens'), ({'temperature': -1.0}, 'temperature'),
                     ({'top_k': 300}, 'top_k')]:
    kwargs = {'num_tokens': 3, **bad}
    with pytest.raises(ValueError, match=match):
      generate.generate(model, params, 'a', kwargs.pop('num_tokens'), **kwargs)


def test_unbounded_kinds_decode_past_max_len_and_learned_positions_give_nan():
  model, params = _model('linear', position='sinusoidal')
  ids = generate.generate(model, params, 'abc', 60)  # 64 tokens > max_len = 32
  assert ids.shape == (60,)
  # Called directly past its table, a learned-position model returns NaN, not a clamped row.
  model, params = _model('linear', position='learned')
  tokens = jnp.zeros((1, 32), jnp.int32)
  _, cache = model.apply({'params': params}, tokens, method=PREFILL)
  logits, _ = model.apply({'params': params}, tokens[:, 0], cache, method=DECODE)
  assert np.isnan(np.asarray(logits)).all()


# ----------------------------------------------------------------------------- workdirs and CLI


def test_load_model_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    generate.load_model(str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match='holds no config.json'):
    generate.load_model(str(tmp_path))
  mlm = tmp_path / 'mlm'
  mlm.mkdir()
  workdir_lib.record_config(str(mlm), load_config('mlm.py'), {}, 0)
  with pytest.raises(ValueError, match="holds a 'mlm' run; generation needs a causal"):
    generate.load_model(str(mlm))
  lm = tmp_path / 'lm'
  lm.mkdir()
  workdir_lib.record_config(str(lm), load_config('lm.py'), {}, 0)
  with pytest.raises(ValueError, match='no checkpoints/ folder'):
    generate.load_model(str(lm))


def test_load_config_applies_recorded_changes(tmp_path):
  config = load_config('lm.py')
  workdir_lib.record_config(str(tmp_path), config, {}, 0)
  changed = load_config('lm.py', {'num_train_steps': 5000})
  workdir_lib.record_config(str(tmp_path), changed, {'num_train_steps': (1000, 5000)}, 1000)
  loaded = generate.load_config(str(tmp_path))
  assert loaded.num_train_steps == 5000 and loaded.model.attention == 'linear'
  assert workdir_lib.flatten(loaded) == workdir_lib.flatten(changed)


@pytest.mark.slow
def test_generate_command_prints_the_requested_tokens_from_the_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  state = train.train_and_evaluate(tiny_lm_config(tmp_path), workdir)
  model, params, step = generate.load_model(workdir)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  ids = generate.generate(model, params, 'def ', 20)
  assert ids.shape == (20,)
  result = subprocess.run(
      [sys.executable, '-m', 'linformer_jax.generate', f'--workdir={workdir}', '--prompt=def ',
       '--num_tokens=20'], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': REPO, 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == 'def ' + generate.to_text(ids) + '\n'
  # A prompt the model cannot take is a one-line error, not a traceback.
  result = subprocess.run(
      [sys.executable, '-m', 'linformer_jax.generate', f'--workdir={workdir}',
       '--prompt=' + 'a' * 40], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': REPO, 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true'})
  assert result.returncode == 1
  assert 'generate: the prompt is 40 bytes; this model takes at most 31' in result.stderr
  assert 'Traceback' not in result.stderr
