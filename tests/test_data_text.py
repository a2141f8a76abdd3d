"""Masked-LM input pipeline: packing, masking statistics, resume and sharding contracts."""
import ml_collections
import numpy as np
import pytest

from linformer_jax.data import ordering
from linformer_jax.data import stdlib_corpus
from linformer_jax.data import text as ip

SEQ_LEN = 128
BATCH = 8


def _config(**overrides):
  config = dict(dataset='stdlib_docs', data_dir=None, text_files='', text_key='text',
                seq_len=SEQ_LEN, batch_size=BATCH, seed=0, mask_rate=0.15, num_eval_batches=2,
                repeat_passage=False, max_train_sequences=None)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _assert_mlm_invariants(batch):
  inputs, targets, weights = batch['inputs'], batch['targets'], batch['weights']
  assert not weights[targets >= 256].any(), 'a special token selected for prediction'
  np.testing.assert_array_equal(inputs[weights == 0], targets[weights == 0])
  assert (targets[:, 0] == ip.CLS_ID).all()
  assert ((0 <= targets) & (targets < ip.VOCAB_SIZE)).all()
  assert set(np.unique(weights)) <= {0.0, 1.0}


def test_encode_decode_round_trip():
  text = 'Linear attention: O(n) — naïve 文字 🚀'
  ids = ip.encode(text)
  assert ids.dtype == np.int32 and len(ids) == len(text.encode('utf-8'))
  assert ids.max() < 256
  assert ip.decode(ids) == text
  with_specials = np.concatenate([[ip.CLS_ID], ids, [ip.EOS_ID, ip.MASK_ID, ip.PAD_ID]])
  assert ip.decode(with_specials) == text
  assert ip.decode([0xff]) == '\ufffd'  # invalid UTF-8 is replaced, not raised


def test_pack_exact():
  c, e, p = ip.CLS_ID, ip.EOS_ID, ip.PAD_ID
  a, b, cc, d, ee = (ord(x) for x in 'abcde')
  rows = ip.pack([b'abc', b'', b'de'], seq_len=4)
  assert rows.dtype == np.uint16
  np.testing.assert_array_equal(rows, [[c, a, b, cc], [c, e, d, ee], [c, e, p, p]])
  np.testing.assert_array_equal(ip.pack([b'abc', b'de'], 4, max_sequences=1), [[c, a, b, cc]])
  assert ip.pack([], 4).shape == (0, 4)


def test_mask_tokens_statistics():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 256, (64, 2048)).astype(np.int32)
  tokens[:, 0] = ip.CLS_ID
  tokens[:, -300:] = ip.PAD_ID
  tokens[:, 100] = ip.EOS_ID
  batch = ip.mask_tokens(tokens, np.random.default_rng(1), mask_rate=0.15)
  _assert_mlm_invariants(batch)
  np.testing.assert_array_equal(batch['targets'], tokens)
  real = (tokens != ip.PAD_ID) & (tokens != ip.CLS_ID)
  selected = batch['weights'] == 1
  assert abs(selected[real].mean() - 0.15) < 0.005
  inputs, targets = batch['inputs'][selected], tokens[selected]
  masked = inputs == ip.MASK_ID
  kept = inputs == targets
  randomized = ~masked & ~kept
  assert abs(masked.mean() - 0.8) < 0.01
  # A random byte equals the original 1/256 of the time and then counts as kept.
  assert abs(kept.mean() - (0.1 + 0.1 / 256)) < 0.01
  assert abs(randomized.mean() - 0.1 * 255 / 256) < 0.01
  assert (inputs[randomized] < 256).all()


def test_batches_shapes_dtypes_and_masking(data_dir):
  train_iter, eval_batches = ip.create_datasets(_config(data_dir=data_dir, num_eval_batches=3))
  assert len(eval_batches) == 3
  batches = _take(train_iter, 20)
  for batch in batches + eval_batches:
    assert batch['inputs'].shape == batch['targets'].shape == (BATCH, SEQ_LEN)
    assert batch['weights'].shape == (BATCH, SEQ_LEN)
    assert batch['inputs'].dtype == batch['targets'].dtype == np.int32
    assert batch['weights'].dtype == np.float32
    _assert_mlm_invariants(batch)
  targets = np.stack([b['targets'] for b in batches])
  weights = np.stack([b['weights'] for b in batches])
  real = (targets != ip.PAD_ID) & (targets != ip.CLS_ID)
  assert abs(weights[real].mean() - 0.15) < 0.02
  # Prose, not noise: ' the ' is everywhere in docstrings; documents end in EOS.
  assert ' the ' in ip.decode(targets[:, 0])
  assert (targets == ip.EOS_ID).any()


def test_determinism_and_seeds(data_dir):
  config = _config(data_dir=data_dir)
  a = _take(ip.create_datasets(config)[0], 3)
  b = _take(ip.create_datasets(config)[0], 3)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  c = _take(ip.create_datasets(_config(data_dir=data_dir, seed=1))[0], 3)
  for x, y in zip(a, c):
    assert not np.array_equal(x['targets'], y['targets'])
    assert not np.array_equal(x['weights'], y['weights'])
  assert not np.array_equal(a[0]['targets'], a[1]['targets'])


def test_resume_from_step(data_dir):
  config = _config(data_dir=data_dir)
  uninterrupted = _take(ip.create_datasets(config)[0], 8)
  resumed = _take(ip.create_datasets(config, start_step=5)[0], 3)
  for x, y in zip(uninterrupted[5:], resumed):
    _assert_batches_equal(x, y)


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_shards_concatenate_to_global_batch(data_dir, process_count):
  config = _config(data_dir=data_dir)
  train, evals = ip.create_datasets(config, start_step=3)
  whole = _take(train, 2) + evals
  shards = []
  for p in range(process_count):
    train, evals = ip.create_datasets(config, start_step=3, process_index=p,
                                      process_count=process_count)
    shards.append(_take(train, 2) + evals)
  for i, batch in enumerate(whole):
    for k in batch:
      assert shards[0][i][k].shape[0] == BATCH // process_count
      np.testing.assert_array_equal(np.concatenate([s[i][k] for s in shards]), batch[k])


def test_eval_batches_fixed(data_dir):
  _, a = ip.create_datasets(_config(data_dir=data_dir))
  _, b = ip.create_datasets(_config(data_dir=data_dir, seed=7), start_step=100)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  assert not np.array_equal(a[0]['targets'], a[1]['targets'])


def test_validation_split(data_dir):
  # Files, not rows, are split (identical rows, e.g. licence comments, recur).
  paths = stdlib_corpus.source_files(stdlib_corpus.stdlib_dir())
  held_out = [p for p in paths if ordering.split_by_name(p) == 'validation']
  assert 0.02 < len(held_out) / len(paths) < 0.10
  splits = stdlib_corpus.prepare(data_dir).info.splits  # Already prepared: reused.
  assert set(splits) == {'train', 'validation'}
  assert splits['validation'].num_examples <= len(held_out)
  source = ip._source(_config(data_dir=data_dir))
  num_train = len(ip._rows(source, 'train', SEQ_LEN, 10**9))
  num_val = len(ip._rows(source, 'validation', SEQ_LEN, 10**9))
  assert 0.01 < num_val / (num_train + num_val) < 0.15


def test_extract_text_orders_docstrings_and_comments():
  source = b'"""Module doc."""\n# one\nclass A:\n  """Class doc."""\n  def f(self):  # two\n' \
           b'    """Method doc."""\n    return "# not a comment"\n'
  assert stdlib_corpus.extract_text(source) == (
      'Module doc.\n# one\nClass doc.\n# two\nMethod doc.')
  assert stdlib_corpus.extract_text(b'def broken(:\n') is None


def test_text_files(tmp_path):
  words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon']
  for i in range(40):
    (tmp_path / f'doc{i:02d}.txt').write_text(' '.join(words[j % 5] for j in range(i, i + 60)))
  config = _config(text_files=str(tmp_path / '*.txt'), dataset='no_such_dataset',
                   seq_len=64, num_eval_batches=2)
  ip.check_config(config)  # text_files takes precedence over dataset.
  train_iter, eval_batches = ip.create_datasets(config)
  for batch in _take(train_iter, 5) + eval_batches:
    assert batch['inputs'].shape == (BATCH, 64)
    _assert_mlm_invariants(batch)
    allowed = set(ip.encode(' '.join(words)).tolist()) | {ip.EOS_ID, ip.PAD_ID}
    assert set(np.unique(batch['targets'][:, 1:]).tolist()) <= allowed
  source = ip._source(config)
  train_rows = ip._rows(source, 'train', 64, 10**9)
  val_rows = ip._rows(source, 'validation', 64, 10**9)
  assert len(val_rows) and len(train_rows) > len(val_rows)


def test_single_text_file_holds_out_its_tail(tmp_path):
  path = tmp_path / 'one.txt'
  path.write_text('the quick brown fox jumps over the lazy dog. ' * 200)  # 9000 bytes
  config = _config(text_files=str(path), seq_len=64)
  source = ip._source(config)
  train_rows = ip._rows(source, 'train', 64, 10**9)
  val_rows = ip._rows(source, 'validation', 64, 10**9)
  np.testing.assert_array_equal(np.concatenate([train_rows, val_rows]),
                                ip.pack([path.read_bytes()], 64))
  assert len(val_rows) == len(ip.pack([path.read_bytes()], 64)) // 20
  _, eval_batches = ip.create_datasets(config)
  assert len(eval_batches) == 2


@pytest.mark.parametrize('overrides, match', [
    (dict(dataset='lm1bb'), r"'lm1bb' is an unknown TFDS dataset.*lm1b"),
    (dict(text_files='/no/such/dir/*.txt'), r"'/no/such/dir/\*\.txt' matches no files"),
    (dict(mask_rate=0.0), r'mask_rate=0\.0'),
    (dict(mask_rate=1.5), r'mask_rate=1\.5'),
    (dict(seq_len=1), r'seq_len=1'),
    (dict(text_key='body'), r"text_key='body'.*\['text'\]"),
])
def test_check_config_errors(overrides, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    ip.check_config(_config(data_dir=str(tmp_path), **overrides))


def test_check_config_unprepared_tfds_dataset(tmp_path):
  with pytest.raises(ValueError, match=r"'lm1b' is not prepared") as error:
    ip.check_config(_config(dataset='lm1b', data_dir=str(tmp_path)))
  assert str(tmp_path) in str(error.value)
  assert f'tfds build lm1b --data_dir={tmp_path}' in str(error.value)


def test_special_tokens_are_never_masked():
  tokens = np.array([[ip.CLS_ID, 65, ip.EOS_ID, 66, ip.EOS_ID, ip.PAD_ID]] * 2000)
  batch = ip.mask_tokens(tokens, np.random.default_rng(0), mask_rate=0.5)
  selected = batch['weights'] > 0
  assert not selected[:, [0, 2, 4, 5]].any()
  np.testing.assert_array_equal(batch['inputs'][:, [0, 2, 4, 5]], tokens[:, [0, 2, 4, 5]])
  assert 0.45 < selected[:, [1, 3]].mean() < 0.55  # The bytes still are, at mask_rate.


def test_byte_entropies_exact_on_a_hand_made_corpus():
  a, b, c = ord('a'), ord('b'), ord('c')
  train = np.array([[ip.CLS_ID, a, b, a, b, ip.EOS_ID, ip.PAD_ID]])
  evals = np.array([[ip.CLS_ID, a, b, c, ip.PAD_ID, ip.PAD_ID, ip.PAD_ID]])
  # Train bytes: a 2, b 2 (N = 4). Pairs ending in a byte: CLS->a 1, a->b 2, b->a 1
  # (b->EOS predicts no byte). Add-one: p(x | prev) = (n(prev, x) + 1) / (n(prev) + 256).
  unigram = -np.mean(np.log([3 / 260, 3 / 260, 1 / 260]))
  bigram = -np.mean(np.log([2 / 257, 3 / 258, 1 / 257]))  # CLS->a, a->b, b->c
  got = ip.byte_entropies(train, evals)
  np.testing.assert_allclose(got['baseline_unigram_loss'], unigram, rtol=1e-12)
  np.testing.assert_allclose(got['baseline_bigram_loss'], bigram, rtol=1e-12)


def test_byte_entropies_of_known_sources():
  rng = np.random.default_rng(0)
  def rows(stream):
    return np.concatenate([np.full((len(stream) // 99, 1), ip.CLS_ID),
                           stream[:len(stream) // 99 * 99].reshape(-1, 99)], axis=1)
  iid = rng.integers(0, 4, 400_000) + ord('a')  # Uniform over 4 bytes: both are ln 4.
  got = ip.byte_entropies(rows(iid[:300_000]), rows(iid[300_000:]))
  # Add-one smoothing costs ln(1 + 256 / n) ~ 0.003 nats with n ~ 75000 per context.
  np.testing.assert_allclose(list(got.values()), [np.log(4)] * 2, atol=1e-2)
  cycle = np.tile(np.arange(4) + ord('a'), 100_000)  # abcdabcd...: the previous byte decides.
  got = ip.byte_entropies(rows(cycle[:300_000]), rows(cycle[300_000:]))
  np.testing.assert_allclose(got['baseline_unigram_loss'], np.log(4), atol=2e-3)
  # Only a row's first byte is uncertain (after CLS, any of 4 phases): ln(4) / 99.
  np.testing.assert_allclose(got['baseline_bigram_loss'], np.log(4) / 99, atol=5e-3)


def test_baselines_of_the_default_corpus(data_dir):
  # The figures issue 12 reported for seq_len 1024.
  got = ip.baselines(_config(data_dir=data_dir, seq_len=1024))
  np.testing.assert_allclose(got['baseline_unigram_loss'], 3.34, atol=0.005)
  np.testing.assert_allclose(got['baseline_bigram_loss'], 2.65, atol=0.005)


def _write(directory, files):
  directory.mkdir(exist_ok=True)
  for name, text in files.items():
    (directory / name).write_text(text)
  return str(directory / '*')


@pytest.mark.parametrize('files, match', [
    ({'a.txt': '', 'b.txt': ''}, r'all 2 matched files are empty'),
    ({'a.txt': 'short'}, r'fills 1 row\(s\) of seq_len=64; need at least 2'),
    ({'sub/': None, 'a.txt': 'x' * 500}, r'matches directories \[.*sub.*\]; it must match text files'),
])
def test_bad_text_files(tmp_path, files, match):
  for name, text in files.items():
    if text is None:
      (tmp_path / name).mkdir()
  pattern = _write(tmp_path, {k: v for k, v in files.items() if v is not None})
  with pytest.raises(ValueError, match=match):
    ip.baselines(_config(text_files=pattern, seq_len=64))


def test_empty_validation_files(tmp_path):
  files = {f'doc{i}.txt': 'some text ' * 50 for i in range(30)}
  val = [n for n in files if ordering.split_by_name(n) == 'validation']
  assert val, 'no validation file among these names; pick others'
  files.update({n: '' for n in val})
  pattern = _write(tmp_path, files)
  with pytest.raises(ValueError, match=r'the validation files hold no text'):
    ip.baselines(_config(text_files=pattern, seq_len=64))


def test_tilde_is_expanded(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  _write(tmp_path / 'notes', {'a.txt': 'hello world ' * 100})
  config = _config(text_files='~/notes/*.txt', data_dir='~/tfds', seq_len=64)
  assert ip._source(config) == ('files', str(tmp_path / 'notes' / '*.txt'))
  assert ip._source(_config(data_dir='~/tfds'))[2] == str(tmp_path / 'tfds')
  train_iter, _ = ip.create_datasets(config)
  assert next(train_iter)['inputs'].shape == (BATCH, 64)
