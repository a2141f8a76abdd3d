"""Multi-query associative recall (MQAR), generated on the fly (numpy only, no JAX, no TF).

The recall task of Zoology (Arora et al. 2023, arXiv:2312.04927): a row of
`seq_len` tokens starts with `num_pairs` key-value pairs `k1 v1 k2 v2 ...`
(keys distinct within a row, drawn from `key_vocab_size` key ids; values drawn
independently, with repeats, from `value_vocab_size` value ids). The rest of the
row is cut into 2-token slots; `num_pairs` slots, chosen uniformly at random,
hold the queries `k v`, one per pair, in random order, and every other token is
noise drawn uniformly from keys and values (Zoology also fills with noise from
the whole vocabulary; its query slots follow a power law that favours slots
right after the pairs, ours are uniform). With seq_len = 4 * num_pairs there is
no noise and the queries directly follow the pairs.

Batches have the masked-LM format, so `models.MLMModel` serves as the model:
{'inputs': int32 [b, n], 'targets': int32 [b, n], 'weights': float32 [b, n]},
weights 1.0 exactly at the num_pairs scored positions of each row.
  bidirectional (config.model.causal False): each query's value is replaced by
    MASK in the inputs; the target there is the value.
  causal (config.model.causal True): next-token prediction; inputs are the row,
    targets the row shifted left by one (the last target is MASK_ID, weight 0),
    scored at each query key, whose target is its value.
Accuracy at the scored positions is the recall accuracy.

The global batch at step s is generated from a numpy Generator seeded by
(config.seed, s), so a resumed run sees the batches of an uninterrupted one;
process p of P keeps rows ordering.process_slice(...) of it. The eval set is
seeded independently of config.seed: runs with different seeds are scored on the
same examples.

Config fields: seed, seq_len, num_pairs, key_vocab_size, value_vocab_size,
batch_size (global), num_eval_batches, model.causal.
"""
from collections.abc import Iterator
import math

import numpy as np

from linformer_jax.data import check_int
from linformer_jax.data import ordering

# Token ids: MASK, then the keys, then the values (see vocab_size).
MASK_ID = 0
FIRST_KEY_ID = 1
# Rows are never padded: no position is masked out of attention.
PAD_ID = None
# As in data/text.py: eval examples do not depend on config.seed, and tags keep
# the train and eval streams apart.
_EVAL_SEED = 0
_TRAIN_TAG, _EVAL_TAG = 1, 2

Batch = dict[str, np.ndarray]


def vocab_size(config) -> int:
  """Model vocabulary: MASK, key_vocab_size keys, value_vocab_size values."""
  return FIRST_KEY_ID + config.key_vocab_size + config.value_vocab_size


def _causal(config) -> bool:
  return config.model.get('causal', False) if 'model' in config else False


# ----------------------------------------------------------------------------- config


def check_config(config) -> None:
  """Fast validation, before anything is generated; ValueError naming the bad value.

  The keys every task shares (batch_size, seed, ...) are tasks.check_config's.
  """
  check_int('num_pairs', config.num_pairs, 1)
  check_int('key_vocab_size', config.key_vocab_size, 1)
  check_int('value_vocab_size', config.value_vocab_size, 2)
  check_int('seq_len', config.seq_len, 1)
  if config.key_vocab_size < config.num_pairs:
    raise ValueError(f'config.key_vocab_size={config.key_vocab_size} is smaller than '
                     f'config.num_pairs={config.num_pairs}: keys within a row are distinct, so '
                     f'key_vocab_size must be >= num_pairs')
  if config.seq_len < 4 * config.num_pairs:
    raise ValueError(f'config.seq_len={config.seq_len} cannot hold config.num_pairs='
                     f'{config.num_pairs} pairs and their queries (2 tokens each): need seq_len '
                     f'>= 4 * num_pairs = {4 * config.num_pairs}')
  causal = _causal(config)
  if not isinstance(causal, (bool, np.bool_)):
    raise ValueError(f'config.model.causal={causal!r} must be True or False')


def baselines(config) -> dict:
  """Reference scores at the query positions, without recall.

  baseline_chance_accuracy / baseline_chance_loss: a uniform guess over the
  values (loss in nats; the names classification's baselines use).
  baseline_mode_guess_accuracy: guessing the value that occurs most often among the
  row's pairs, the best a model can do without matching the query key (values
  repeat, so it beats a guess among the row's values, ~1/num_pairs).
  """
  values, pairs = config.value_vocab_size, config.num_pairs
  return dict(baseline_chance_accuracy=1.0 / values, baseline_chance_loss=math.log(values),
              baseline_mode_guess_accuracy=float(_expected_max_count(pairs, values)) / pairs)


def _expected_max_count(draws: int, values: int) -> float:
  """E[largest multiplicity] among `draws` uniform draws from `values` values, exactly.

  P(every count <= m) = draws! [x^draws] (sum_{j<=m} (x/values)^j / j!)^values.
  The power is taken by repeated squaring, truncated at degree `draws`, with x
  scaled by t = draws / e so that no coefficient overflows (draws < ~1900).
  """
  t = draws / math.e
  def power(poly, exponent):
    out = np.zeros(draws + 1)
    out[0] = 1.0
    while exponent:
      if exponent & 1:
        out = np.convolve(out, poly)[:draws + 1]
      poly = np.convolve(poly, poly)[:draws + 1]
      exponent >>= 1
    return out

  scale = math.exp(math.lgamma(draws + 1) - draws * math.log(t))  # draws! / t^draws
  expected = 0.0
  for m in range(draws):  # E[max] = sum_m P(max > m).
    j = np.arange(m + 1)
    terms = np.zeros(draws + 1)
    terms[:m + 1] = np.exp(j * math.log(t / values) - np.array([math.lgamma(k + 1) for k in j]))
    above = 1.0 - scale * power(terms, values)[draws]
    if above < 1e-12:
      break
    expected += above
  return expected


# ----------------------------------------------------------------------------- generation


def generate(rng: np.random.Generator, batch_size: int, seq_len: int, num_pairs: int,
             key_vocab_size: int, value_vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """MQAR rows (module docstring) -> (tokens int32 [b, n], answers bool [b, n]).

  `answers` is True at each query's value (num_pairs positions per row); the
  query key is the token before it. Costs O(b * (n log n + K log K)), K = key_vocab_size.
  """
  b, n, p = batch_size, seq_len, num_pairs
  first_value = FIRST_KEY_ID + key_vocab_size
  # A random permutation prefix per row: distinct keys in random order.
  keys = np.argsort(rng.random((b, key_vocab_size)), axis=1)[:, :p] + FIRST_KEY_ID
  values = rng.integers(0, value_vocab_size, (b, p)) + first_value
  num_slots = (n - 2 * p) // 2
  # Query i (of pair i) goes to slot slots[:, i]: distinct slots, random order.
  slots = np.argsort(rng.random((b, num_slots)), axis=1)[:, :p]
  tokens = rng.integers(FIRST_KEY_ID, first_value + value_vocab_size, (b, n))
  tokens[:, 0:2 * p:2] = keys
  tokens[:, 1:2 * p:2] = values
  query_pos = 2 * p + 2 * slots
  np.put_along_axis(tokens, query_pos, keys, axis=1)
  np.put_along_axis(tokens, query_pos + 1, values, axis=1)
  answers = np.zeros((b, n), bool)
  np.put_along_axis(answers, query_pos + 1, True, axis=1)
  return tokens.astype(np.int32), answers


def make_batch(tokens: np.ndarray, answers: np.ndarray, causal: bool) -> Batch:
  """tokens int [b, n], answers bool [b, n] -> {'inputs', 'targets', 'weights'}, each [b, n]."""
  tokens = tokens.astype(np.int32)
  if not causal:
    return {'inputs': np.where(answers, MASK_ID, tokens).astype(np.int32),
            'targets': tokens, 'weights': answers.astype(np.float32)}
  targets = np.full_like(tokens, MASK_ID)
  targets[:, :-1] = tokens[:, 1:]
  weights = np.zeros(tokens.shape, np.float32)
  weights[:, :-1] = answers[:, 1:]
  return {'inputs': tokens, 'targets': targets, 'weights': weights}


def _batch(config, rng: np.random.Generator, rows: slice) -> Batch:
  """This process' rows of the global batch drawn from `rng`."""
  # Generated for the whole global batch, so process shards concatenate to it.
  tokens, answers = generate(rng, config.batch_size, config.seq_len, config.num_pairs,
                             config.key_vocab_size, config.value_vocab_size)
  return make_batch(tokens[rows], answers[rows], _causal(config))


def create_datasets(config, *, start_step: int = 0, process_index: int = 0,
                    process_count: int = 1) -> tuple[Iterator[Batch], list[Batch]]:
  """Returns (train_iter, eval_batches) of per-process numpy batches.

  Batches of config.batch_size // process_count rows of config.seq_len tokens.
  train_iter is infinite and starts at global step `start_step`; eval_batches
  are config.num_eval_batches fixed batches, the same for every config.seed.
  Generation costs milliseconds per batch; nothing is stored. The config is
  taken as checked (tasks.check_config).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, {process_count})')
  rows = ordering.process_slice(config.batch_size, process_index, process_count)
  eval_batches = [_batch(config, np.random.default_rng([_EVAL_SEED, _EVAL_TAG, i]), rows)
                  for i in range(config.num_eval_batches)]

  def train_iter():
    step = start_step
    while True:
      yield _batch(config, np.random.default_rng([config.seed, _TRAIN_TAG, step]), rows)
      step += 1

  return train_iter(), eval_batches
