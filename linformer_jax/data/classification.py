"""Input pipeline for long-sequence classification (numpy and TFDS, no JAX).

Datasets (`config.dataset`):
  images: 'shapes' (embedded, see synthetic_data), 'cifar10', 'mnist';
  audio:  'tones' (embedded), 'speech_commands';
  tokens: 'listops' (embedded, as in Long Range Arena).
TFDS datasets are read from `config.data_dir` and never downloaded.

Every example becomes a sequence:
  images [H, W, C] -> patches float32 [(H/p)*(W/p), p*p*C], p = config.patch_size,
    patches in row-major order, features ordered (row, column, channel);
  audio [T] -> frames float32 [T/f, f], f = config.frame_size;
  ListOps -> int32 token ids [config.listops_max_len]: CLS, expression, PAD.
Batches are dicts {'inputs': [b, ...], 'label': int32 [b]}.

Each split is held in memory, compactly (uint8 pixels, int16 samples, uint8
tokens), and converted per batch. The global training batch at step s is a pure
function of (config, s) (see batching.py), so a resumed run sees the same
batches as an uninterrupted one, and process p of P takes rows
batching.process_slice(...) of it.

Config fields: dataset, seed, batch_size (global), num_eval_batches; optional
(defaults): data_dir (TFDS_DATA_DIR or ~/tensorflow_datasets), image_size (32,
'shapes' only), image_channels (1, 'shapes' only: 1 or 3), patch_size (1),
num_samples (8000), frame_size (2), listops_min_len (500), listops_max_len
(2000), num_train_examples / num_eval_examples (generated sets only, defaults in
DEFAULT_NUM_EXAMPLES).
"""
import dataclasses
import functools
import glob
import os
import re

import numpy as np

from linformer_jax import batching
from linformer_jax import synthetic_data

GENERATED_DATASETS = ('shapes', 'tones', 'listops')
TFDS_DATASETS = ('cifar10', 'mnist', 'speech_commands')
DATASETS = GENERATED_DATASETS + TFDS_DATASETS

_MODALITY = {'shapes': 'image', 'cifar10': 'image', 'mnist': 'image', 'tones': 'audio',
             'speech_commands': 'audio', 'listops': 'tokens'}
_NUM_CLASSES = {'shapes': len(synthetic_data.SHAPES_CLASSES),
                'tones': len(synthetic_data.TONES_CLASSES),
                'listops': synthetic_data.LISTOPS_NUM_CLASSES,
                'cifar10': 10, 'mnist': 10, 'speech_commands': 12}
_TFDS_IMAGE_SHAPES = {'cifar10': (32, 32, 3), 'mnist': (28, 28, 1)}
# Neither cifar10 nor mnist has a validation split.
_TFDS_EVAL_SPLIT = {'cifar10': 'test', 'mnist': 'test', 'speech_commands': 'validation'}
_EMBEDDED_ALTERNATIVE = {'image': 'shapes', 'audio': 'tones'}
# (train, eval) sizes of generated sets. Generating both takes about 3-6 s for
# shapes at 32x32 (10-15 s at 64x64), 6-11 s for tones and 6-13 s for listops on
# 2 CPU cores (idle-busy). Stored: 23 MB, 90 MB, 190 MB and 44 MB.
DEFAULT_NUM_EXAMPLES = {'shapes': (20000, 2000), 'tones': (10000, 2000),
                        'listops': (20000, 2000)}
# LRA's tree distribution (depth <= 10) keeps 0.04% of trees above 4000 tokens
# and almost none above 6000, so larger minimum lengths never finish sampling.
LISTOPS_MIN_LEN_LIMIT = 4000


@dataclasses.dataclass(frozen=True)
class _Split:
  """One split in memory: raw [n, ...] (uint8 / int16 / uint8 tokens), labels [n] int32."""
  raw: np.ndarray
  labels: np.ndarray


# ----------------------------------------------------------------------------- config


_DEFAULTS = dict(image_size=32, image_channels=1, patch_size=1, num_samples=8000, frame_size=2,
                 listops_min_len=500, listops_max_len=2000)


def _opt(config, name, default=None):
  """An optional config field; missing or None means `default` or _DEFAULTS[name]."""
  value = config.get(name, None)
  if value is not None:
    return value
  return _DEFAULTS[name] if default is None else default


def _image_shape(config):
  if config.dataset == 'shapes':
    size = _opt(config, 'image_size')
    return size, size, _opt(config, 'image_channels')
  return _TFDS_IMAGE_SHAPES[config.dataset]


def _data_dir(config):
  data_dir = config.get('data_dir', None) or os.environ.get('TFDS_DATA_DIR') or (
      '~/tensorflow_datasets')
  return os.path.expanduser(data_dir)


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'config.{name}={value!r} must be an integer >= {minimum}')


def _check_shapes(config):
  """Validates everything that decides sequence shapes; cheap, touches no data."""
  name = config.dataset
  if name not in DATASETS:
    raise ValueError(f'Unknown config.dataset={name!r}; valid: {", ".join(DATASETS)}')
  modality = _MODALITY[name]
  if modality == 'image':
    if name == 'shapes':
      _check_int('image_size', _opt(config, 'image_size'), 8)
      if _opt(config, 'image_channels') not in (1, 3):
        raise ValueError(f'config.image_channels={_opt(config, "image_channels")!r} must be 1 or 3')
    patch = _opt(config, 'patch_size')
    _check_int('patch_size', patch, 1)
    height, width, _ = _image_shape(config)
    if height % patch or width % patch:
      raise ValueError(f'config.patch_size={patch} must divide the {name} image size '
                       f'{height}x{width}; valid: divisors of {np.gcd(height, width)}')
  elif modality == 'audio':
    samples, frame = _opt(config, 'num_samples'), _opt(config, 'frame_size')
    _check_int('num_samples', samples, 1)
    _check_int('frame_size', frame, 1)
    if samples % frame:
      raise ValueError(f'config.frame_size={frame} must divide config.num_samples={samples}')
  else:
    lo, hi = _opt(config, 'listops_min_len'), _opt(config, 'listops_max_len')
    _check_int('listops_min_len', lo, 0)
    _check_int('listops_max_len', hi, 3)
    if not lo < hi - 1 or lo >= LISTOPS_MIN_LEN_LIMIT:
      raise ValueError(
          f'config.listops_min_len={lo}, listops_max_len={hi}: expressions of L tokens with '
          f'min_len < L < max_len are kept, so need min_len < max_len - 1 and '
          f'min_len < {LISTOPS_MIN_LEN_LIMIT} (longer trees are too rare); LRA uses 500, 2000')


def _prepared_dir(name, data_dir):
  """Directory of the newest prepared version of a TFDS dataset, or ValueError.

  Looks on the local file system only: tfds.builder(name) may consult GCS or
  the network, which must never happen (or hang) here.
  """
  versions = []
  for info in glob.glob(os.path.join(glob.escape(data_dir), name, '*', 'dataset_info.json')):
    version = os.path.basename(os.path.dirname(info))
    if re.fullmatch(r'\d+\.\d+\.\d+', version):  # Skips half-built '*.incomplete*' dirs.
      versions.append((tuple(int(v) for v in version.split('.')), os.path.dirname(info)))
  if versions:
    return max(versions)[1]
  alternative = _EMBEDDED_ALTERNATIVE[_MODALITY[name]]
  raise ValueError(
      f'config.dataset={name!r} is not prepared in data_dir={data_dir!r} (no '
      f'{os.path.join(data_dir, name)}/<version>/dataset_info.json), and this pipeline never '
      f'downloads. Prepare it on a machine with network access with '
      f'`tfds build {name} --data_dir={data_dir}` (copy the directory here if needed), '
      f'or use the embedded dataset: config.dataset={alternative!r}.')


def check_config(config) -> None:
  """Fast validation before anything expensive; ValueError naming the bad value."""
  _check_shapes(config)
  _check_int('seed', config.seed, 0)
  _check_int('batch_size', config.batch_size, 1)
  _check_int('num_eval_batches', config.num_eval_batches, 0)
  if config.dataset in TFDS_DATASETS:
    _prepared_dir(config.dataset, _data_dir(config))
  else:
    train, evals = _num_examples(config)
    _check_int('num_train_examples', train, 1)
    _check_int('num_eval_examples', evals, 1)


def dataset_info(config) -> dict:
  """What the model needs, without touching data.

  Returns dict(num_classes, seq_len, feature_dim, vocab_size, pad_id,
  grid_width): float inputs set feature_dim (vocab_size = pad_id = None), token
  inputs set vocab_size and pad_id (feature_dim = None); images set grid_width,
  the tokens per row of their row-major token grid (0 otherwise).
  """
  _check_shapes(config)
  modality = _MODALITY[config.dataset]
  info = dict(num_classes=_NUM_CLASSES[config.dataset], seq_len=None, feature_dim=None,
              vocab_size=None, pad_id=None, grid_width=0)
  if modality == 'image':
    height, width, channels = _image_shape(config)
    patch = _opt(config, 'patch_size')
    info.update(seq_len=(height // patch) * (width // patch), feature_dim=patch * patch * channels,
                grid_width=width // patch)
  elif modality == 'audio':
    frame = _opt(config, 'frame_size')
    info.update(seq_len=_opt(config, 'num_samples') // frame, feature_dim=frame)
  else:
    info.update(seq_len=_opt(config, 'listops_max_len'),
                vocab_size=synthetic_data.LISTOPS_VOCAB_SIZE, pad_id=synthetic_data.PAD_ID)
  return info


# ----------------------------------------------------------------------------- conversion


def image_patches(images, patch_size):
  """uint8 images [b, H, W, C] -> float32 patches [b, (H/p)*(W/p), p*p*C] in [0, 1]."""
  b, h, w, c = images.shape
  p = patch_size
  x = images.astype(np.float32) / 255.0
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def audio_frames(waves, frame_size):
  """int16 waveforms [b, T] -> float32 frames [b, T/f, f] in [-1, 1)."""
  b, t = waves.shape
  return (waves.astype(np.float32) / 32768.0).reshape(b, t // frame_size, frame_size)


def _to_int16(waves):
  """Float waveforms in [-1, 1] -> int16, the storage format of all audio."""
  return np.round(np.clip(waves, -1.0, 1.0) * 32767).astype(np.int16)


def crop_or_pad(wave, num_samples):
  """[T] -> [num_samples]: centre crop if longer, zeros (silence) appended if shorter."""
  extra = len(wave) - num_samples
  if extra >= 0:
    return wave[extra // 2:extra // 2 + num_samples]
  return np.pad(wave, (0, -extra))


def tfds_example_to_raw(name, example, num_samples):
  """One TFDS numpy example -> (stored input, label): uint8 [H, W, C] or int16 [num_samples]."""
  label = int(example['label'])
  if _MODALITY[name] == 'image':
    image = np.asarray(example['image'])
    if image.shape != _TFDS_IMAGE_SHAPES[name] or image.dtype != np.uint8:
      raise ValueError(f'{name}: expected uint8 {_TFDS_IMAGE_SHAPES[name]}, got '
                       f'{image.dtype} {image.shape}')
    return image, label
  audio = np.asarray(example['audio'])
  # TFDS stores 16-bit PCM in int16 or int64 (legacy); floats would be in [-1, 1].
  audio = audio.astype(np.int16) if np.issubdtype(audio.dtype, np.integer) else _to_int16(audio)
  return crop_or_pad(audio.reshape(-1), num_samples), label


def _converter(config):
  """Stored rows [b, ...] -> model inputs, with the config's values bound now."""
  modality = _MODALITY[config.dataset]
  if modality == 'image':
    return functools.partial(image_patches, patch_size=_opt(config, 'patch_size'))
  if modality == 'audio':
    return functools.partial(audio_frames, frame_size=_opt(config, 'frame_size'))
  return lambda tokens: tokens.astype(np.int32)


# ----------------------------------------------------------------------------- loading


def _num_examples(config):
  train, evals = DEFAULT_NUM_EXAMPLES[config.dataset]
  return _opt(config, 'num_train_examples', train), _opt(config, 'num_eval_examples', evals)


def _frozen(raw, labels):
  split = _Split(raw, labels.astype(np.int32))
  for a in (split.raw, split.labels):
    a.flags.writeable = False  # Shared through the cache: nobody may edit it.
  return split


# A few splits only: each may be hundreds of MB.
@functools.lru_cache(maxsize=4)
def _generated_split(name, seed, stream, num_examples, args):
  """Generated split; stream 0 = train, 1 = eval, independent streams of `seed`."""
  rng_seed = np.random.SeedSequence(seed, spawn_key=(stream,))
  if name == 'shapes':
    images, labels = synthetic_data.generate_shapes(num_examples, rng_seed, *args)
    return _frozen(np.round(images * 255).astype(np.uint8), labels)
  if name == 'tones':
    waves, labels = synthetic_data.generate_tones(num_examples, rng_seed, *args)
    return _frozen(_to_int16(waves[..., 0]), labels)
  tokens, labels = synthetic_data.generate_listops(num_examples, rng_seed, *args)
  return _frozen(tokens.astype(np.uint8), labels)  # 17 ids fit a byte.


@functools.lru_cache(maxsize=2)
def _tfds_split(name, directory, split, num_samples):
  """A whole TFDS split read into memory, in its stored (deterministic) order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')  # The accelerators belong to JAX.
  except RuntimeError:
    pass  # TF already initialized its devices elsewhere.
  builder = tfds.builder_from_directory(directory)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  raws, labels = [], []
  for example in tfds.as_numpy(ds):
    raw, label = tfds_example_to_raw(name, example, num_samples)
    raws.append(raw)
    labels.append(label)
  return _frozen(np.stack(raws), np.asarray(labels))


def _splits(config):
  """(train, eval) _Splits for the config, generated or read once per process."""
  name = config.dataset
  if name in TFDS_DATASETS:
    directory = _prepared_dir(name, _data_dir(config))
    samples = _opt(config, 'num_samples')
    return (_tfds_split(name, directory, 'train', samples),
            _tfds_split(name, directory, _TFDS_EVAL_SPLIT[name], samples))
  if name == 'shapes':
    args = (_opt(config, 'image_size'), _opt(config, 'image_channels'))
  elif name == 'tones':
    args = (_opt(config, 'num_samples'),)
  else:
    args = (_opt(config, 'listops_min_len'), _opt(config, 'listops_max_len'))
  train, evals = _num_examples(config)
  return (_generated_split(name, config.seed, 0, train, args),
          _generated_split(name, config.seed, 1, evals, args))


# ----------------------------------------------------------------------------- batches


def _batch(convert, split, indices):
  return {'inputs': convert(split.raw[indices]), 'label': split.labels[indices]}


def _train_batches(convert, train, batch_size, seed, start_step, rows):
  step = start_step
  while True:
    indices = batching.global_batch_indices(step, batch_size, len(train.labels), seed)
    yield _batch(convert, train, indices[rows])
    step += 1


def create_datasets(config, *, start_step=0, process_index=0, process_count=1):
  """Returns (train_iter, eval_batches) of per-process numpy batches.

  train_iter: infinite iterator of batches of config.batch_size // process_count
  rows, starting at global step `start_step`; epochs are reshuffled with
  config.seed. eval_batches: list of config.num_eval_batches batches; global
  eval batch i holds eval examples i*B .. (i+1)*B - 1 (B = config.batch_size),
  wrapping around to the start if the eval set is smaller. The first call per
  process generates or reads the data (seconds to minutes); later calls reuse it.
  """
  check_config(config)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, {process_count})')
  rows = batching.process_slice(config.batch_size, process_index, process_count)
  train, evals = _splits(config)
  convert, size = _converter(config), config.batch_size
  eval_batches = [
      _batch(convert, evals, (np.arange(i * size, (i + 1) * size) % len(evals.labels))[rows])
      for i in range(config.num_eval_batches)
  ]
  return _train_batches(convert, train, size, config.seed, start_step, rows), eval_batches


# ----------------------------------------------------------------------------- baselines


def baselines(config) -> dict:
  """Chance and majority-class scores on the eval set (the examples eval_batches hold).

  'baseline_chance_loss' ln(num_classes) and 'baseline_chance_accuracy'
  1/num_classes: a uniform guess. 'baseline_majority_accuracy': always
  answering the most frequent class of the training split. Loads the splits
  as create_datasets does (cached: it reuses them); O(examples).
  """
  check_config(config)
  train, evals = _splits(config)
  num_classes = _NUM_CLASSES[config.dataset]
  count = config.num_eval_batches * config.batch_size or len(evals.labels)
  eval_labels = evals.labels[np.arange(count) % len(evals.labels)]
  majority = np.bincount(train.labels, minlength=num_classes).argmax()
  return {'baseline_chance_loss': float(np.log(num_classes)),
          'baseline_chance_accuracy': 1.0 / num_classes,
          'baseline_majority_accuracy': float(np.mean(eval_labels == majority))}
