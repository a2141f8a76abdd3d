"""MQAR generator and pipeline: layout checked from the tokens alone, determinism, sharding."""
import math

from ml_collections import ConfigDict
import numpy as np
import pytest

from linformer_jax.data import recall as rd


def _config(causal=False, **kw):
  base = dict(task='recall', seed=0, seq_len=64, num_pairs=8, key_vocab_size=16,
              value_vocab_size=12, batch_size=8, num_eval_batches=2)
  base.update(kw)
  config = ConfigDict(base)
  config.model = ConfigDict(dict(attention='softmax', causal=causal, num_layers=1, num_heads=2,
                                 emb_dim=16, mlp_dim=32, dropout_rate=0.0))
  return config


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _check_recall(batch, config, causal):
  """Every scored position asks for a key of the pairs and its target is that key's value.

  Reads only the batch: the pairs are the first 2 * num_pairs inputs, and a
  key's value is the token after its first occurrence.
  """
  p = config.num_pairs
  first_value = rd.FIRST_KEY_ID + config.key_vocab_size
  inputs, targets, weights = batch['inputs'], batch['targets'], batch['weights']
  for row in range(inputs.shape[0]):
    x, scored = inputs[row], np.flatnonzero(weights[row])
    keys, values = x[0:2 * p:2], x[1:2 * p:2]
    assert len(set(keys.tolist())) == p, 'keys of a row must be distinct'
    assert ((rd.FIRST_KEY_ID <= keys) & (keys < first_value)).all()
    assert ((first_value <= values) & (values < rd.vocab_size(config))).all()
    assert len(scored) == p
    assert scored.min() >= 2 * p, 'a query inside the pairs'
    asked = []
    for i in scored:
      if causal:
        key = x[i]
        assert targets[row, i] == x[i + 1], 'the value must follow its query key'
      else:
        assert x[i] == rd.MASK_ID, 'the answer must be hidden'
        key = x[i - 1]
      first = int(np.flatnonzero(x == key)[0])
      assert first < 2 * p and first % 2 == 0, f'query key {key} not among the pairs'
      assert targets[row, i] == x[first + 1], 'target is not the value stated in the pairs'
      asked.append(int(key))
    assert sorted(asked) == sorted(keys.tolist()), 'each pair is queried exactly once'
    if causal:
      assert rd.MASK_ID not in x
    else:
      assert (x == rd.MASK_ID).sum() == p, 'MASK only at the answers'


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('seq_len,num_pairs', [(64, 8), (32, 8), (65, 3), (256, 16)])
def test_batches_layout_from_tokens(causal, seq_len, num_pairs):
  config = _config(causal, seq_len=seq_len, num_pairs=num_pairs, key_vocab_size=num_pairs + 3)
  train, evals = rd.create_datasets(config)
  for batch in _take(train, 3) + evals:
    assert batch['inputs'].shape == batch['targets'].shape == batch['weights'].shape == (
        8, seq_len)
    assert batch['inputs'].dtype == batch['targets'].dtype == np.int32
    assert batch['weights'].dtype == np.float32
    assert set(np.unique(batch['weights'])) == {0.0, 1.0}
    assert ((0 <= batch['inputs']) & (batch['inputs'] < rd.vocab_size(config))).all()
    _check_recall(batch, config, causal)


def test_no_noise_when_queries_fill_the_row():
  """seq_len = 4 * num_pairs: the queries (a permutation of the pairs) directly follow them."""
  config = _config(True, seq_len=32, num_pairs=8)
  batch = next(rd.create_datasets(config)[0])
  pairs = batch['inputs'][:, :16].reshape(8, 8, 2)
  queries = batch['inputs'][:, 16:].reshape(8, 8, 2)
  for row in range(8):
    assert sorted(map(tuple, queries[row].tolist())) == sorted(map(tuple, pairs[row].tolist()))
  assert not (queries[:, :, 0] == pairs[:, :, 0]).all(), 'queries should be shuffled'


def test_causal_is_the_shifted_sequence_of_the_bidirectional_rows():
  """Same seed, same rows: causal inputs are the bidirectional targets; targets shift by one."""
  train_b, evals_b = rd.create_datasets(_config(False))
  train_c, evals_c = rd.create_datasets(_config(True))
  for b, c in zip(_take(train_b, 2) + evals_b, _take(train_c, 2) + evals_c):
    np.testing.assert_array_equal(c['inputs'], b['targets'])
    np.testing.assert_array_equal(c['targets'][:, :-1], c['inputs'][:, 1:])
    assert (c['targets'][:, -1] == rd.MASK_ID).all() and not c['weights'][:, -1].any()
    np.testing.assert_array_equal(c['weights'][:, :-1], b['weights'][:, 1:])
    assert not c['weights'][:, -1].any() and not b['weights'][:, 0].any()
    np.testing.assert_array_equal(b['inputs'][b['weights'] == 0], b['targets'][b['weights'] == 0])


def test_deterministic_per_seed_and_resumable():
  config = _config()
  a, b = _take(rd.create_datasets(config)[0], 4), _take(rd.create_datasets(config)[0], 4)
  for x, y in zip(a, b):
    _assert_equal(x, y)
  resumed = next(rd.create_datasets(config, start_step=3)[0])
  _assert_equal(resumed, a[3])
  assert not np.array_equal(a[0]['inputs'], a[1]['inputs'])
  other_train, other_evals = rd.create_datasets(_config(seed=1))
  assert not np.array_equal(next(other_train)['inputs'], a[0]['inputs'])
  for x, y in zip(other_evals, rd.create_datasets(config)[1]):
    _assert_equal(x, y)  # The eval set does not depend on config.seed.
  evals = rd.create_datasets(config)[1]
  assert not np.array_equal(evals[0]['inputs'], evals[1]['inputs'])


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('process_count', [2, 4])
def test_process_shards_concatenate_to_global_batch(causal, process_count):
  config = _config(causal)
  whole_train, whole_evals = rd.create_datasets(config, start_step=5)
  whole = _take(whole_train, 2) + whole_evals
  shards = []
  for p in range(process_count):
    train, evals = rd.create_datasets(config, start_step=5, process_index=p,
                                      process_count=process_count)
    shards.append(_take(train, 2) + evals)
  for i, batch in enumerate(whole):
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([s[i][k] for s in shards]), batch[k], err_msg=k)


def test_baselines():
  config = _config(num_pairs=8, value_vocab_size=12, seq_len=256, batch_size=64)
  base = rd.baselines(config)
  assert base['baseline_chance_accuracy'] == pytest.approx(1 / 12)
  assert base['baseline_chance_loss'] == pytest.approx(math.log(12))
  # Small cases by hand: 3 draws of 2 values; 2 draws of 12 values.
  assert rd._expected_max_count(3, 2) == pytest.approx(0.25 * 3 + 0.75 * 2, rel=1e-12)
  assert rd._expected_max_count(2, 12) == pytest.approx(1 + 1 / 12, rel=1e-12)
  # Guessing the row's most frequent pair value (ties at random), simulated.
  rng = np.random.default_rng(0)
  hits = []
  for batch in _take(rd.create_datasets(config)[0], 20):
    answers = batch['targets'][batch['weights'] > 0].reshape(64, 8)
    for values, row_answers in zip(batch['inputs'][:, 1:16:2], answers):
      counts = np.bincount(values)
      guess = rng.choice(np.flatnonzero(counts == counts.max()), size=8)
      hits.append(guess == row_answers)
  # 10240 guesses: standard error ~0.0045.
  assert np.mean(hits) == pytest.approx(base['baseline_mode_guess_accuracy'], abs=0.015)
  assert base['baseline_mode_guess_accuracy'] > 1 / 8 + 0.1  # Well apart from a uniform guess among 8.


@pytest.mark.parametrize('field,value,match', [
    ('num_pairs', 0, 'num_pairs=0 must be an integer >= 1'),
    ('num_pairs', 2.0, r'num_pairs=2.0 must be an integer'),
    ('key_vocab_size', 7, 'key_vocab_size=7 is smaller than config.num_pairs=8'),
    ('value_vocab_size', 1, 'value_vocab_size=1 must be an integer >= 2'),
    ('seq_len', 31, r'seq_len=31 cannot hold .* need seq_len >= 4 \* num_pairs = 32'),
])
def test_check_config_errors(field, value, match):
  config = _config(**{field: value})
  with pytest.raises(ValueError, match=match):
    rd.check_config(config)


def test_check_config_causal_and_processes():
  config = _config(causal='yes')
  with pytest.raises(ValueError, match=r"causal='yes' must be True or False"):
    rd.check_config(config)
  with pytest.raises(ValueError, match='not divisible by process_count=3'):
    rd.create_datasets(_config(), process_count=3, process_index=0)
  with pytest.raises(ValueError, match='process_index=2'):
    rd.create_datasets(_config(), process_count=2, process_index=2)

