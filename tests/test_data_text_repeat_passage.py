"""Masked-LM rows holding a passage twice (config.repeat_passage), scored on the second copy."""
import ml_collections
import numpy as np
import pytest

from linformer_jax.data import text as ip


def _text_files(tmp_path, num_files=4, words=4000):
  rng = np.random.default_rng(0)
  vocab = ['attention', 'linear', 'kernel', 'softmax', 'query', 'key', 'value', 'the', 'of',
           'a', 'Return', 'None.', 'list', 'élan', '文字']
  for i in range(num_files):
    (tmp_path / f'doc{i}.txt').write_text(' '.join(rng.choice(vocab, words)), encoding='utf-8')
  return str(tmp_path / '*.txt')


def _config(pattern, **overrides):
  config = dict(dataset='unused', data_dir=None, text_files=pattern, text_key='text',
                seq_len=129, batch_size=8, seed=0, mask_rate=0.15, num_eval_batches=2,
                repeat_passage=True, max_train_sequences=None)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def test_repeat_passage_exact():
  c, p = ip.CLS_ID, ip.PAD_ID
  rows = np.array([[c, 1, 2, 3], [c, 4, 5, p]], np.uint16)
  np.testing.assert_array_equal(ip.repeat_passage(rows, 7), [[c, 1, 2, 3, 1, 2, 3],
                                                             [c, 4, 5, p, 4, 5, p]])
  np.testing.assert_array_equal(ip.repeat_passage(rows, 8), [[c, 1, 2, 3, 1, 2, 3, p],
                                                             [c, 4, 5, p, 4, 5, p, p]])


@pytest.mark.parametrize('seq_len', [129, 128, 3])
def test_passage_repeats_and_only_the_second_copy_is_scored(tmp_path, seq_len):
  config = _config(_text_files(tmp_path), seq_len=seq_len)
  half = (seq_len - 1) // 2
  train, evals = ip.create_datasets(config)
  batches = [next(train) for _ in range(3)] + evals
  for batch in batches:
    tokens, inputs, weights = batch['targets'], batch['inputs'], batch['weights']
    assert inputs.shape == weights.shape == (8, seq_len)
    assert (tokens[:, 0] == ip.CLS_ID).all()
    np.testing.assert_array_equal(tokens[:, 1:1 + half], tokens[:, 1 + half:1 + 2 * half])
    if seq_len % 2 == 0:
      assert (tokens[:, -1] == ip.PAD_ID).all() and not weights[:, -1].any()
    assert not weights[:, :1 + half].any(), 'a first-copy byte is scored'
    # The first copy is intact; every corrupted second-copy byte is scored.
    corrupted = inputs != tokens
    np.testing.assert_array_equal(inputs[:, :1 + half], tokens[:, :1 + half])
    assert corrupted[:, 1 + half:].any() or seq_len == 3
    assert weights[corrupted].all()


def test_scored_fraction_and_corruption_of_the_second_copy(tmp_path):
  """~mask_rate of the second copy is scored; of those 0.8 MASK, 0.1 random, 0.1 kept."""
  config = _config(_text_files(tmp_path), seq_len=257, batch_size=32)
  half = 128
  train, _ = ip.create_datasets(config)
  scored = masked = changed = real = 0
  for batch in (next(train) for _ in range(20)):
    second = batch['weights'][:, 1 + half:] > 0
    inputs, tokens = batch['inputs'][:, 1 + half:], batch['targets'][:, 1 + half:]
    scored += second.sum()
    masked += (second & (inputs == ip.MASK_ID)).sum()
    changed += (second & (inputs != tokens)).sum()
    real += (tokens != ip.PAD_ID).sum()
  # ~82k real bytes, ~12k scored: binomial standard errors ~0.001 and ~0.004.
  assert scored / real == pytest.approx(0.15, abs=0.005)
  assert masked / scored == pytest.approx(0.8, abs=0.015)
  assert changed / scored == pytest.approx(0.9 - 0.1 / 256, abs=0.015)


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_shards_concatenate(tmp_path, process_count):
  config = _config(_text_files(tmp_path))
  whole_train, whole_evals = ip.create_datasets(config, start_step=2)
  whole = [next(whole_train) for _ in range(2)] + whole_evals
  shards = []
  for p in range(process_count):
    train, evals = ip.create_datasets(config, start_step=2, process_index=p,
                                      process_count=process_count)
    shards.append([next(train) for _ in range(2)] + evals)
  for i, batch in enumerate(whole):
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([s[i][k] for s in shards]), batch[k], err_msg=k)


def test_off_and_missing_and_seq_len_check(tmp_path):
  pattern = _text_files(tmp_path)
  plain = _config(pattern)
  del plain['repeat_passage']
  with pytest.raises(ValueError, match=r"config keys \['repeat_passage'\] are missing"):
    ip.check_config(plain)
  off = _config(pattern, repeat_passage=False)
  tokens = ip.create_datasets(off)[1][0]['targets']
  assert not np.array_equal(tokens[:, 1:65], tokens[:, 65:129])
  with pytest.raises(ValueError, match=r'seq_len=2 must be >= 3 with config.repeat_passage'):
    ip.check_config(_config(pattern, seq_len=2))
