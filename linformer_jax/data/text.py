"""Masked-LM and next-byte input pipeline over byte-level text (numpy, tf.data, TFDS; no JAX).

Text comes from `config.text_files` (a glob) or, if that is empty, the TFDS
dataset `config.dataset` (default `stdlib_docs`, prepared locally on first use).
Every document is UTF-8 bytes followed by EOS; the concatenated stream is cut
into rows of `seq_len` tokens, each starting with CLS. The packed corpus is held
in memory as uint16, so a TFDS dataset is read only up to a cap (below); a
corpus larger than memory would need a streaming reader instead.

The global batch at step s is a pure function of (config, s): rows are drawn
with `ordering.global_batch_indices` and BERT masking uses a numpy Generator
seeded by (seed, s). A resumed run therefore sees exactly the batches of an
uninterrupted one, and each process takes its `ordering.process_slice` rows.

With `config.repeat_passage` each row is CLS, a passage of
(seq_len - 1) // 2 bytes, the same passage again (and one PAD if seq_len is
even). Only the second copy is masked (as usual, mask_rate of its bytes) and
scored; the first is left intact, so every scored byte can be copied from its
twin (seq_len - 1) // 2 positions back. Local mixing alone cannot reach that
far; attention can, if it can single out one of that many positions.

With `next_byte=True` (the 'lm' task) the same rows are served unmasked for
next-byte prediction: `next_byte_batch`.
"""
from collections.abc import Iterable, Iterator
import difflib
import functools
import glob
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from linformer_jax.data import ordering
from linformer_jax.data import stdlib_corpus
# The vocabulary, under this module's names too (data.text.PAD_ID, ...).
from linformer_jax.data.vocab import (CLS_ID, EOS_ID, MASK_ID, PAD_ID, VOCAB_SIZE,  # pylint: disable=unused-import
                                      decode, encode)

# Default cap on packed training tokens when `config.max_train_sequences` is
# unset: 64M tokens, 128 MiB as uint16, whatever seq_len is.
DEFAULT_MAX_TRAIN_TOKENS = 1 << 26
# Eval masks do not depend on config.seed, so runs with different seeds are
# scored on the same masked tokens.
_EVAL_SEED = 0
# Tags keep the train and eval masking streams apart from each other and from
# the batch-order permutations (seeded by [seed, epoch]).
_TRAIN_TAG, _EVAL_TAG = 1, 2

# Config keys this pipeline reads besides batch_size, seed and num_eval_batches;
# configs/mlm.py sets them.
REQUIRED_KEYS = ('dataset', 'data_dir', 'text_files', 'text_key', 'seq_len', 'mask_rate',
                 'repeat_passage', 'max_train_sequences')

Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------
# Config validation.


def check_config(config) -> None:
  """Raises ValueError for a config the pipeline cannot serve; cheap, offline.

  The keys every task shares (batch_size, seed, ...) are tasks.check_config's.
  config.task 'lm' reads next-byte batches, which ignore config.mask_rate.
  """
  missing = [key for key in REQUIRED_KEYS if key not in config]
  if missing:
    raise ValueError(f'config keys {missing} are missing; configs/mlm.py sets them')
  next_byte = config.get('task') == 'lm'
  if config.seq_len < 2:
    raise ValueError(f'config.seq_len={config.seq_len} must be >= 2 (CLS plus one token).')
  if next_byte and config.repeat_passage:
    raise ValueError("config.repeat_passage=True is for masked-LM only (task 'mlm'): next-byte "
                     "batches (task 'lm') score every byte, so the second copy cannot be singled out.")
  if not next_byte and not 0.0 < config.mask_rate < 1.0:
    raise ValueError(f'config.mask_rate={config.mask_rate} must be in the open interval (0, 1).')
  if config.repeat_passage and config.seq_len < 3:
    raise ValueError(f'config.seq_len={config.seq_len} must be >= 3 with config.repeat_passage '
                     '(CLS plus a passage of at least one byte, twice).')
  pattern = _text_files(config)
  if pattern:
    _matched_files(pattern)
    return
  _checked_builder(config.dataset, _data_dir(config), config.text_key)


def _text_files(config) -> str:
  # The shell leaves `~` alone after `--config.text_files=`.
  return os.path.expanduser(config.get('text_files') or '')


def _data_dir(config) -> str | None:
  data_dir = config.get('data_dir')
  return os.path.expanduser(data_dir) if data_dir else data_dir


def _matched_files(pattern: str) -> list[str]:
  """The files `pattern` matches, or ValueError: none, a directory, or all empty."""
  files = _glob(pattern)
  if not files:
    raise ValueError(f'config.text_files={pattern!r} matches no files.')
  if '://' not in pattern:  # Cheap local checks; remote files fail when read.
    dirs = [f for f in files if os.path.isdir(f)]
    if dirs:
      raise ValueError(f'config.text_files={pattern!r} matches directories {dirs[:3]}; it must '
                       f'match text files only, e.g. {os.path.join(dirs[0], "*.txt")!r}.')
    if not any(os.path.getsize(f) for f in files):
      raise ValueError(f'config.text_files={pattern!r}: all {len(files)} matched files are '
                       f'empty.')
  return files


def _checked_builder(name: str, data_dir: str | None, text_key: str):
  """The TFDS builder for `name`, or ValueError saying why it cannot be read."""
  if name == stdlib_corpus.StdlibDocs.name:
    # Prepared on first use by create_datasets: nothing to check but the key.
    builder = stdlib_corpus.StdlibDocs(data_dir=data_dir)
  else:
    builder = _tfds_builder(name, data_dir)
    if not builder.is_prepared():
      root = str(builder.data_dir_root)
      raise ValueError(
          f'TFDS dataset config.dataset={name!r} is not prepared in data_dir={data_dir!r} '
          f'(looked for {builder.data_dir}). This pipeline never downloads; prepare it '
          f'once with\n  tfds build {name} --data_dir={root}\nor in Python\n'
          f'  tfds.builder({name!r}, data_dir={root!r}).download_and_prepare()')
    if 'train' not in builder.info.splits:
      raise ValueError(f'TFDS dataset {name!r} has no train split; its splits are '
                       f'{sorted(builder.info.splits)}.')
  features = builder.info.features
  if text_key not in features:
    raise ValueError(f'config.text_key={text_key!r} is not a feature of TFDS dataset '
                     f'{name!r}; its features are {sorted(features)}.')
  return builder


def _tfds_builder(name: str, data_dir: str | None):
  # try_gcs=False (also the TFDS default): a missing dataset must fail here,
  # not wait on gs://tfds-data from a machine without network.
  try:
    return tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError:
    base = name.split(':')[-1].split('/')[0]
    known = sorted(set(tfds.list_builders(with_community_datasets=False)))
    close = difflib.get_close_matches(base, known)
    hint = f' Close names: {", ".join(close)}.' if close else ''
    raise ValueError(f'config.dataset={name!r} is an unknown TFDS dataset.{hint}') from None
  except Exception as e:  # pylint: disable=broad-except
    # E.g. an unknown builder config ('wiki40b/xx') or a missing optional
    # dependency; TFDS's own message says which.
    raise ValueError(f'config.dataset={name!r}: TFDS cannot build it: {e}') from e


# ----------------------------------------------------------------------------
# Packing.


def pack(documents: Iterable[bytes], seq_len: int, max_sequences: int | None = None) -> np.ndarray:
  """Packs byte documents into rows: [n, seq_len] uint16.

  Each row is CLS followed by `seq_len - 1` tokens of the stream
  `doc_0 EOS doc_1 EOS ...`; documents run on across rows. The last row is
  padded with PAD rather than dropped, so a corpus shorter than one row still
  yields one. Empty documents are skipped. Reading stops once `max_sequences`
  rows are filled.
  """
  body_len = seq_len - 1
  max_tokens = None if max_sequences is None else max_sequences * body_len
  chunks, total = [], 0
  for doc in documents:
    if not doc:
      continue
    chunks.append(np.frombuffer(doc, dtype=np.uint8))
    total += len(doc) + 1
    if max_tokens is not None and total >= max_tokens:
      break
  if not chunks:
    return np.zeros((0, seq_len), np.uint16)
  ends = np.cumsum([len(c) for c in chunks])
  stream = np.insert(np.concatenate(chunks).astype(np.uint16), ends, EOS_ID)
  if max_tokens is not None:
    stream = stream[:max_tokens]
  num_rows = -(-len(stream) // body_len)
  body = np.full(num_rows * body_len, PAD_ID, np.uint16)
  body[:len(stream)] = stream
  rows = np.empty((num_rows, seq_len), np.uint16)
  rows[:, 0] = CLS_ID
  rows[:, 1:] = body.reshape(num_rows, body_len)
  return rows


def _glob(pattern: str) -> list[str]:
  if '://' in pattern:  # gs:// and friends need TF's filesystems.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return sorted(tf.io.gfile.glob(pattern))
  return sorted(glob.glob(pattern))


def _read(path: str) -> bytes:
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  with open(path, 'rb') as f:
    return f.read()


def _text_file_rows(pattern: str, split: str, seq_len: int, max_sequences: int) -> np.ndarray:
  """Rows of one split of the files matching `pattern`, one document per file.

  With several files, a file is validation when `ordering.split_by_name` of
  its base name says so (~5%, stable as files are added or moved); if that
  picks none or all, the last file is validation. A single file is split by
  rows instead: the last 1/ordering.VALIDATION_MODULUS (at least one) are
  validation.
  """
  files = _matched_files(pattern)
  if len(files) == 1:
    rows = pack([_read(files[0])], seq_len)
    if len(rows) < 2:
      raise ValueError(f'config.text_files={pattern!r}: {files[0]} fills {len(rows)} row(s) of '
                       f'seq_len={seq_len}; need at least 2 to hold out validation.')
    num_eval = max(1, len(rows) // ordering.VALIDATION_MODULUS)
    rows = rows[:-num_eval] if split == 'train' else rows[-num_eval:]
    return rows[:max_sequences]
  val = [f for f in files if ordering.split_by_name(os.path.basename(f)) == 'validation']
  if not val or len(val) == len(files):
    val = files[-1:]
  chosen = val if split == 'validation' else [f for f in files if f not in set(val)]
  rows = pack((_read(f) for f in chosen), seq_len, max_sequences)
  if not len(rows):
    raise ValueError(f'config.text_files={pattern!r}: the {split} files hold no text: '
                     f'{chosen[:3]}{" ..." if len(chosen) > 3 else ""}. Of several files, '
                     f'those ordering.split_by_name puts there (else the last) are '
                     f'validation.')
  return rows


def _tfds_documents(builder, split: str, text_key: str) -> Iterator[bytes]:
  # No autocache: reading may stop early at the cap, and the packed array is
  # the only copy we keep.
  read_config = tfds.ReadConfig(try_autocache=False)
  ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
  ds = ds.map(lambda ex: ex[text_key]).batch(1024).prefetch(2)
  for texts in ds.as_numpy_iterator():
    yield from texts


def _tfds_split(builder, split: str) -> str:
  """The TFDS split behind our 'train' / 'validation'."""
  splits = builder.info.splits
  held_out = next((s for s in ('validation', 'test') if s in splits), None)
  if held_out is None:  # Hold out the tail of train.
    return 'train[:95%]' if split == 'train' else 'train[95%:]'
  return 'train' if split == 'train' else held_out


@functools.lru_cache(maxsize=8)
def _rows(source: tuple, split: str, seq_len: int, max_sequences: int) -> np.ndarray:
  """Packed rows of `split` ('train' or 'validation'), cached per process."""
  if source[0] == 'files':
    rows = _text_file_rows(source[1], split, seq_len, max_sequences)
  else:
    _, name, data_dir, text_key = source
    builder = _checked_builder(name, data_dir, text_key)
    if name == stdlib_corpus.StdlibDocs.name:
      builder = stdlib_corpus.prepare(data_dir)
    tfds_split = _tfds_split(builder, split)
    rows = pack(_tfds_documents(builder, tfds_split, text_key), seq_len, max_sequences)
    if not len(rows):
      raise ValueError(f'TFDS dataset {name!r} in data_dir={data_dir!r}: split {tfds_split!r} '
                       f'has no text under key {text_key!r}.')
  logging.info('%s %s: %d rows of %d tokens (cap %d).', source, split, len(rows), seq_len,
               max_sequences)
  rows.setflags(write=False)  # Shared by every caller through the cache.
  return rows


def _max_train_sequences(config) -> int:
  return config.max_train_sequences or max(1, DEFAULT_MAX_TRAIN_TOKENS // config.seq_len)


def _source(config) -> tuple:
  if config.get('text_files'):
    return ('files', _text_files(config))
  return ('tfds', config.dataset, _data_dir(config), config.text_key)


# ----------------------------------------------------------------------------
# Masking and batches.


def _draws(rng: np.random.Generator, shape) -> tuple[np.ndarray, ...]:
  return (rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32),
          rng.integers(0, 256, shape, dtype=np.int32))


def _apply_mask(tokens: np.ndarray, draws, mask_rate: float, first: int = 0) -> Batch:
  select_u, action_u, random_bytes = draws
  selected = (tokens < 256) & (select_u < mask_rate)  # Bytes only: never PAD, CLS or EOS.
  selected[:, :first] = False  # Positions before `first` are neither masked nor scored.
  inputs = np.where(selected & (action_u < 0.8), MASK_ID, tokens)
  inputs = np.where(selected & (action_u >= 0.8) & (action_u < 0.9), random_bytes, inputs)
  return {
      'inputs': inputs.astype(np.int32),
      'targets': tokens.astype(np.int32),
      'weights': selected.astype(np.float32),
  }


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, mask_rate: float) -> Batch:
  """BERT masking of token rows [b, n] -> {'inputs', 'targets', 'weights'}, each [b, n].

  Each byte token (0..255; not PAD, CLS or EOS) is selected with probability `mask_rate`;
  a selected token becomes MASK 80% of the time, a uniform random byte 10%,
  and stays unchanged 10%. `weights` is 1.0 exactly on the selected tokens.
  """
  return _apply_mask(tokens, _draws(rng, tokens.shape), mask_rate)


def repeat_passage(rows: np.ndarray, seq_len: int) -> np.ndarray:
  """Rows [r, 1 + L] (CLS, passage), L = (seq_len - 1) // 2 -> [r, seq_len]:
  CLS, passage, passage, then PAD if seq_len is even."""
  out = np.full((len(rows), seq_len), PAD_ID, rows.dtype)
  out[:, :rows.shape[1]] = rows
  out[:, rows.shape[1]:2 * rows.shape[1] - 1] = rows[:, 1:]
  return out


def next_byte_batch(tokens: np.ndarray) -> Batch:
  """Next-token targets of token rows [b, n] -> {'inputs', 'targets', 'weights'}, each [b, n].

  inputs = tokens; targets[:, i] = tokens[:, i + 1] (PAD after the last
  position, whose successor is not in the row); weights are 1.0 where the
  target is a byte or EOS, 0.0 on PAD.
  """
  targets = np.pad(tokens[:, 1:], ((0, 0), (0, 1)), constant_values=PAD_ID).astype(np.int32)
  return {'inputs': tokens.astype(np.int32), 'targets': targets,
          'weights': ((targets < 256) | (targets == EOS_ID)).astype(np.float32)}


def _batch(rows: np.ndarray, indices: np.ndarray, rng: np.random.Generator, mask_rate: float,
           local: slice, score_from: int = 0, next_byte: bool = False) -> Batch:
  """This process' rows of the global batch `rows[indices]`, masked (or
  next_byte_batch); only positions >= score_from are masked and scored."""
  if next_byte:
    return next_byte_batch(rows[indices[local]])
  # Draw for the whole global batch so that every process slices the same
  # random numbers: shards concatenate to the single-process batch.
  draws = _draws(rng, (len(indices), rows.shape[1]))
  tokens = rows[indices[local]]
  return _apply_mask(tokens, tuple(d[local] for d in draws), mask_rate, score_from)


def create_datasets(config, *, start_step: int = 0, process_index: int = 0, process_count: int = 1,
                    next_byte: bool = False) -> tuple[Iterator[Batch], list[Batch]]:
  """Returns (train_iter, eval_batches) of per-process numpy batches.

  Each batch holds `inputs` int32, `targets` int32 and `weights` float32, all
  [config.batch_size // process_count, config.seq_len]. `train_iter` is
  infinite and starts at global step `start_step`; the global batch at step s
  depends only on (config, s). `eval_batches` are `config.num_eval_batches`
  batches of the validation split in order (wrapping around if it is smaller),
  masked with a fixed seed: identical on every call and for every config.seed.

  Training rows are capped at `config.max_train_sequences` (default
  DEFAULT_MAX_TRAIN_TOKENS // seq_len), read from the start of the train split.
  With config.repeat_passage, rows hold a passage twice and only the second
  copy is masked and scored (module docstring). `next_byte`: unmasked batches of the same
  rows (`next_byte_batch`). The config is taken as checked (tasks.check_config).
  """
  mask_rate = None if next_byte else config.mask_rate
  seq_len, global_batch = config.seq_len, config.batch_size
  local = ordering.process_slice(global_batch, process_index, process_count)
  source = _source(config)
  max_train = _max_train_sequences(config)
  num_eval_batches = config.num_eval_batches
  # Rows are packed at the length they are read in: CLS plus one passage.
  repeat = config.repeat_passage
  read_len = 1 + (seq_len - 1) // 2 if repeat else seq_len
  score_from = read_len if repeat else 0
  expand = functools.partial(repeat_passage, seq_len=seq_len) if repeat else lambda rows: rows
  train_rows = expand(_rows(source, 'train', read_len, max_train))

  eval_batches = []
  if num_eval_batches:
    eval_rows = expand(_rows(source, 'validation', read_len, num_eval_batches * global_batch))
    for i in range(num_eval_batches):
      indices = np.arange(i * global_batch, (i + 1) * global_batch) % len(eval_rows)
      rng = np.random.default_rng([_EVAL_SEED, _EVAL_TAG, i])
      eval_batches.append(_batch(eval_rows, indices, rng, mask_rate, local, score_from, next_byte))

  def train_iter():
    step = start_step
    while True:
      indices = ordering.global_batch_indices(step, global_batch, len(train_rows), config.seed)
      rng = np.random.default_rng([config.seed, _TRAIN_TAG, step])
      yield _batch(train_rows, indices, rng, mask_rate, local, score_from, next_byte)
      step += 1

  return train_iter(), eval_batches


# ----------------------------------------------------------------------------
# Baselines.


def byte_entropies(train_rows: np.ndarray, eval_rows: np.ndarray, *,
                   with_eos: bool = False) -> dict:
  """Cross-entropies (nats per token) of eval_rows' bytes under train_rows' byte statistics.

  Every byte token (0..255: the tokens masking may select; with `with_eos`
  also EOS: the next-byte targets) of `eval_rows` [m, n] is scored by a
  unigram model p(x) and a previous-token bigram model p(x | token before x: a
  byte, CLS or EOS), both counted over `train_rows` [r, n] with add-one
  (Laplace) smoothing over the scored values (256, or 257). O(r n).
  Returns {'baseline_unigram_loss', 'baseline_bigram_loss'}.
  """
  # EOS is counted as value 256, so the tables stay dense.
  size = 257 if with_eos else 256

  def pairs(rows):
    prev, cur = rows[:, :-1].astype(np.int64).ravel(), rows[:, 1:].astype(np.int64).ravel()
    keep = (cur < 256) | (with_eos & (cur == EOS_ID))
    return prev[keep], np.minimum(cur[keep], 256)

  prev, cur = pairs(train_rows)
  unigram = np.bincount(cur, minlength=size).astype(np.float64)
  bigram = np.bincount(prev * size + cur, minlength=VOCAB_SIZE * size).reshape(VOCAB_SIZE, size)
  log_unigram = np.log((unigram + 1) / (unigram.sum() + size))
  log_bigram = np.log((bigram + 1) / (bigram.sum(axis=1, keepdims=True) + size))
  prev, cur = pairs(eval_rows)
  return {'baseline_unigram_loss': float(-log_unigram[cur].mean()),
          'baseline_bigram_loss': float(-log_bigram[prev, cur].mean())}


def baselines(config, *, next_byte: bool = False) -> dict:
  """`byte_entropies` of the validation split under the training rows' statistics.

  Both splits are read as create_datasets reads them, capped at the training
  cap (cached: the train rows are reused), so a data problem raises here.
  `next_byte`: EOS is scored too, as in next-byte batches.
  """
  source, max_rows = _source(config), _max_train_sequences(config)
  return byte_entropies(_rows(source, 'train', config.seq_len, max_rows),
                        _rows(source, 'validation', config.seq_len, max_rows), with_eos=next_byte)
