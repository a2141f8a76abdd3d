"""Task 'lm': next-byte batches and baselines, LanguageModel, configs/lm*.py training."""
import collections
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linformer_jax as lj
from linformer_jax import config_lib
from linformer_jax.data import text as data
from linformer_jax import metrics
from linformer_jax import tasks
from linformer_jax import trainer as train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ('linear', 'elu_linear', 'softmax', 'none')
CLS, EOS, PAD = data.CLS_ID, data.EOS_ID, data.PAD_ID
# configs/lm.py shrunk to seconds: tiny model, short rows of a small text file.
LM_TINY = {'model.num_layers': 1, 'model.num_heads': 2, 'model.emb_dim': 32, 'model.mlp_dim': 64,
           'model.chunk_size': 8, 'seq_len': 32, 'batch_size': 4, 'num_eval_batches': 1,
           'num_train_steps': 2, 'warmup_steps': 1, 'checkpoint_every_steps': 2,
           'log_every_steps': 1, 'eval_every_steps': 2}


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  # Compilation dominates these tests on CPU; most XLA optimizations halve it.
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


def load_config(name, overrides=()):
  return config_lib.load(os.path.join(REPO, 'configs', name), dict(overrides))


def text_file(directory):
  """A one-file corpus of ~6 KB of varied text (its last rows are validation)."""
  words = 'def class return import lambda yield value index buffer string'.split()
  rng = np.random.default_rng(0)
  text = '\n'.join(' '.join(rng.choice(words, 8)) for _ in range(120))
  path = os.path.join(directory, 'corpus.txt')
  with open(path, 'w') as f:
    f.write(text)
  return path


def tiny_lm_config(tmp_path, name='lm.py', **overrides):
  return load_config(name, {**LM_TINY, 'text_files': text_file(str(tmp_path)), **overrides})


# ----------------------------------------------------------------------------- data


def test_next_byte_batch_shifts_targets_and_weights_bytes_and_eos():
  row = np.array([[CLS, 97, 98, EOS, 99, PAD, PAD]], np.uint16)
  batch = data.next_byte_batch(row)
  np.testing.assert_array_equal(batch['inputs'], row.astype(np.int32))
  np.testing.assert_array_equal(batch['targets'], [[97, 98, EOS, 99, PAD, PAD, PAD]])
  np.testing.assert_array_equal(batch['weights'], [[1, 1, 1, 1, 0, 0, 0]])
  assert {k: v.dtype for k, v in batch.items()} == {
      'inputs': np.int32, 'targets': np.int32, 'weights': np.float32}


def _reference_entropies(train_rows, eval_rows, scored):
  """Add-one unigram / previous-token bigram cross-entropy, by counting in Python."""
  def pairs(rows):
    return [(int(r[i]), int(r[i + 1])) for r in rows for i in range(len(r) - 1)
            if int(r[i + 1]) in scored]
  train_pairs, eval_pairs = pairs(train_rows), pairs(eval_rows)
  uni = collections.Counter(c for _, c in train_pairs)
  bi = collections.Counter(train_pairs)
  prev_total = collections.Counter(p for p, _ in train_pairs)
  v, total = len(scored), len(train_pairs)
  u = -np.mean([np.log((uni[c] + 1) / (total + v)) for _, c in eval_pairs])
  b = -np.mean([np.log((bi[p, c] + 1) / (prev_total[p] + v)) for p, c in eval_pairs])
  return u, b


@pytest.mark.parametrize('with_eos', [False, True])
def test_byte_entropies_match_counting_reference(with_eos):
  rng = np.random.default_rng(1)
  make = lambda n: np.concatenate(
      [np.full((n, 1), CLS), rng.choice([97, 98, 99, EOS, PAD], (n, 15))], axis=1).astype(np.uint16)
  train_rows, eval_rows = make(6), make(3)
  scored = set(range(256)) | ({EOS} if with_eos else set())
  got = data.byte_entropies(train_rows, eval_rows, with_eos=with_eos)
  u, b = _reference_entropies(train_rows, eval_rows, scored)
  np.testing.assert_allclose([got['baseline_unigram_loss'], got['baseline_bigram_loss']], [u, b],
                             rtol=1e-12)


# ----------------------------------------------------------------------------- model


def expected_lm_params(cfg):
  """Parameter count of LanguageModel, written out from the architecture."""
  e, m = cfg.emb_dim, cfg.mlp_dim
  block = 2 * e + (e * m + m) + (m * e + e)  # LayerNorm, MLP
  if cfg.attention != 'none':
    block += 2 * e + 4 * (e * e + e)  # LayerNorm; query, key, value, out
  if cfg.conv_width:
    block += 2 * e + cfg.conv_width * e + e  # LayerNorm, depthwise kernel and bias
  embeddings = cfg.vocab_size * e + (cfg.max_len * e if cfg.position == 'learned' else 0)
  return embeddings + cfg.num_layers * block + 2 * e + cfg.vocab_size  # final norm, output bias


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('conv_width', [0, 3])
def test_lm_exact_parameter_count_and_shapes(kind, conv_width):
  cfg = lj.tiny(attention=kind, causal=True, conv_width=conv_width)
  model = lj.LanguageModel(cfg)
  tokens = jnp.zeros((2, 10), jnp.int32)
  params = model.init(jax.random.key(0), tokens)['params']
  assert sum(x.size for x in jax.tree.leaves(params)) == expected_lm_params(cfg)
  # Tied output layer: no output kernel besides the token embedding.
  assert set(params) == {'embed', 'encoder', 'lm_bias'}
  logits = model.apply({'params': params}, tokens)
  assert logits.shape == (2, 10, cfg.vocab_size) and logits.dtype == jnp.float32


@pytest.mark.parametrize('kind', KINDS)
def test_lm_logits_ignore_later_tokens(kind):
  cfg = lj.tiny(attention=kind, causal=True, conv_width=3)
  model = lj.LanguageModel(cfg)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 256, (2, 24)).astype(np.int32)
  params = model.init(jax.random.key(0), tokens)
  changed = tokens.copy()
  changed[:, 13:] = rng.integers(0, 256, (2, 11))
  a, b = model.apply(params, tokens), model.apply(params, changed)
  np.testing.assert_allclose(a[:, :13], b[:, :13], atol=1e-5)
  assert np.abs(np.asarray(a[:, 13:] - b[:, 13:])).max() > 1e-3  # The perturbation is seen.


def test_lm_rejects_a_non_causal_config():
  with pytest.raises(ValueError, match='causal=True'):
    lj.LanguageModel(lj.tiny()).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  config = load_config('lm.py', {'model.causal': False})
  with pytest.raises(ValueError, match='causal=True'):
    tasks.create(config)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize('name, kind', [('lm.py', 'linear'), ('lm_softmax.py', 'softmax'),
                                        ('lm_elu_linear.py', 'elu_linear'), ('lm_none.py', 'none')])
def test_lm_configs_build_causal_models_with_local_conv(name, kind):
  config = load_config(name)
  model = tasks.create(config).model
  assert isinstance(model, lj.LanguageModel)
  cfg = model.config
  assert (cfg.attention, cfg.causal, cfg.max_len) == (kind, True, config.seq_len)
  assert cfg.conv_width > 0 and cfg.position in ('learned', 'sinusoidal')


@pytest.mark.slow
def test_lm_config_trains_two_steps(tmp_path):
  workdir = str(tmp_path / 'run')
  state = train.train_and_evaluate(tiny_lm_config(tmp_path), workdir)
  assert int(state.step) == 2
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']
  records = metrics.read_metrics(workdir)
  assert [r['step'] for r in records] == [0, 1, 2]
  assert {'baseline_unigram_loss', 'baseline_bigram_loss'} <= records[0].keys()
  assert np.isfinite(records[-1]['eval_loss'])
  # Near ln(260) at init: the loss is over next bytes, not a few masked ones.
  assert abs(records[1]['train_loss'] - np.log(260)) < 0.5
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['config']['task'] == 'lm'


def test_lm_rejects_repeat_passage():
  with pytest.raises(ValueError, match='repeat_passage=True is for masked-LM only'):
    tasks.create(load_config('lm.py', {'repeat_passage': True}))
