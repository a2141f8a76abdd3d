"""Input pipeline for long-sequence classification (numpy and TFDS, no JAX).

Datasets (`config.dataset`):
  images: 'shapes' (generated, see data/generators.py), 'cifar10', 'mnist';
  audio:  'tones' (generated), 'speech_commands';
  tokens: 'listops' (generated, as in Long Range Arena).
TFDS datasets are read from `config.data_dir` and never downloaded.

Every example becomes a sequence:
  images [H, W, C] -> patches float32 [(H/p)*(W/p), p*p*C], p = config.patch_size,
    patches in row-major order, features ordered (row, column, channel);
  audio [T] -> frames float32 [T/f, f], f = config.frame_size;
  ListOps -> int32 token ids [config.listops_max_len]: CLS, expression, PAD.
Batches are dicts {'inputs': [b, ...], 'label': int32 [b]}.

Each split is held in memory, compactly (uint8 pixels, int16 samples, uint8
tokens), and converted per batch. The global training batch at step s is a pure
function of (config, s) (see ordering.py), so a resumed run sees the same
batches as an uninterrupted one, and process p of P takes rows
ordering.process_slice(...) of it.

Config fields (REQUIRED_KEYS; values in configs/image.py, audio.py and
listops.py): dataset, seed, batch_size (global), num_eval_batches, data_dir
(TFDS datasets; None: TFDS_DATA_DIR or ~/tensorflow_datasets), and by dataset
image_size and image_channels ('shapes'), patch_size (images), num_samples and
frame_size (audio), listops_min_len and listops_max_len, num_train_examples and
num_eval_examples (generated sets).
"""
import dataclasses
import functools
import glob
import os
import re

import numpy as np

from linformer_jax import data as data_lib
from linformer_jax.data import check_int
from linformer_jax.data import generators
from linformer_jax.data import ordering

GENERATED_DATASETS = ('shapes', 'tones', 'listops')
TFDS_DATASETS = ('cifar10', 'mnist', 'speech_commands')
DATASETS = GENERATED_DATASETS + TFDS_DATASETS

_MODALITY = {'shapes': 'image', 'cifar10': 'image', 'mnist': 'image', 'tones': 'audio',
             'speech_commands': 'audio', 'listops': 'tokens'}
_NUM_CLASSES = {'shapes': len(generators.SHAPES_CLASSES),
                'tones': len(generators.TONES_CLASSES),
                'listops': generators.LISTOPS_NUM_CLASSES,
                'cifar10': 10, 'mnist': 10, 'speech_commands': 12}
_TFDS_IMAGE_SHAPES = {'cifar10': (32, 32, 3), 'mnist': (28, 28, 1)}
# Neither cifar10 nor mnist has a validation split.
_TFDS_EVAL_SPLIT = {'cifar10': 'test', 'mnist': 'test', 'speech_commands': 'validation'}
_GENERATED_ALTERNATIVE = {'image': 'shapes', 'audio': 'tones'}
_GENERATED_KEYS = ('num_train_examples', 'num_eval_examples')
# Config keys each dataset reads besides dataset, seed, batch_size and num_eval_batches.
REQUIRED_KEYS = {
    'shapes': ('image_size', 'image_channels', 'patch_size') + _GENERATED_KEYS,
    'cifar10': ('patch_size',), 'mnist': ('patch_size',),
    'tones': ('num_samples', 'frame_size') + _GENERATED_KEYS,
    'speech_commands': ('num_samples', 'frame_size'),
    'listops': ('listops_min_len', 'listops_max_len') + _GENERATED_KEYS,
}
# LRA's tree distribution (depth <= 10) keeps 0.04% of trees above 4000 tokens
# and almost none above 6000, so larger minimum lengths never finish sampling.
LISTOPS_MIN_LEN_LIMIT = 4000


@dataclasses.dataclass(frozen=True)
class _Split:
  """One split in memory: raw [n, ...] (uint8 / int16 / uint8 tokens), labels [n] int32."""
  raw: np.ndarray
  labels: np.ndarray


# ----------------------------------------------------------------------------- config


def _image_shape(config):
  if config.dataset == 'shapes':
    return config.image_size, config.image_size, config.image_channels
  return _TFDS_IMAGE_SHAPES[config.dataset]


def _data_dir(config):
  data_dir = config.get('data_dir', None) or os.environ.get('TFDS_DATA_DIR') or (
      '~/tensorflow_datasets')
  return os.path.expanduser(data_dir)


def _check_shapes(config):
  """Validates everything that decides sequence shapes; cheap, touches no data."""
  name = config.dataset
  if name not in DATASETS:
    raise ValueError(f'Unknown config.dataset={name!r}; valid: {", ".join(DATASETS)}')
  missing = [key for key in REQUIRED_KEYS[name] if config.get(key) is None]
  if missing:
    raise ValueError(f'config.dataset={name!r} needs config keys {missing}; configs/image.py, '
                     f'audio.py and listops.py set them')
  modality = _MODALITY[name]
  if modality == 'image':
    if name == 'shapes':
      check_int('image_size', config.image_size, 8)
      if config.image_channels not in (1, 3):
        raise ValueError(f'config.image_channels={config.image_channels!r} must be 1 or 3')
    patch = config.patch_size
    check_int('patch_size', patch, 1)
    height, width, _ = _image_shape(config)
    if height % patch or width % patch:
      raise ValueError(f'config.patch_size={patch} must divide the {name} image size '
                       f'{height}x{width}; valid: divisors of {np.gcd(height, width)}')
  elif modality == 'audio':
    samples, frame = config.num_samples, config.frame_size
    check_int('num_samples', samples, 1)
    check_int('frame_size', frame, 1)
    if samples % frame:
      raise ValueError(f'config.frame_size={frame} must divide config.num_samples={samples}')
  else:
    lo, hi = config.listops_min_len, config.listops_max_len
    check_int('listops_min_len', lo, 0)
    check_int('listops_max_len', hi, 3)
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
  alternative = _GENERATED_ALTERNATIVE[_MODALITY[name]]
  raise ValueError(
      f'config.dataset={name!r} is not prepared in data_dir={data_dir!r} (no '
      f'{os.path.join(data_dir, name)}/<version>/dataset_info.json), and this pipeline never '
      f'downloads. Prepare it on a machine with network access with '
      f'`tfds build {name} --data_dir={data_dir}` (copy the directory here if needed), '
      f'or use the generated dataset: config.dataset={alternative!r}.')


def check_config(config) -> None:
  """Fast validation before anything expensive; ValueError naming the bad value.

  The keys every task shares (batch_size, seed, ...) are tasks.check_config's.
  """
  _check_shapes(config)
  if config.dataset in TFDS_DATASETS:
    _prepared_dir(config.dataset, _data_dir(config))
  else:
    for key in _GENERATED_KEYS:
      check_int(key, config[key], 1)


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
    patch = config.patch_size
    info.update(seq_len=(height // patch) * (width // patch), feature_dim=patch * patch * channels,
                grid_width=width // patch)
  elif modality == 'audio':
    info.update(seq_len=config.num_samples // config.frame_size, feature_dim=config.frame_size)
  else:
    info.update(seq_len=config.listops_max_len, vocab_size=generators.LISTOPS_VOCAB_SIZE,
                pad_id=generators.PAD_ID)
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
    return functools.partial(image_patches, patch_size=config.patch_size)
  if modality == 'audio':
    return functools.partial(audio_frames, frame_size=config.frame_size)
  return lambda tokens: tokens.astype(np.int32)


# ----------------------------------------------------------------------------- loading


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
    images, labels = generators.generate_shapes(num_examples, rng_seed, *args)
    return _frozen(np.round(images * 255).astype(np.uint8), labels)
  if name == 'tones':
    waves, labels = generators.generate_tones(num_examples, rng_seed, *args)
    return _frozen(_to_int16(waves[..., 0]), labels)
  tokens, labels = generators.generate_listops(num_examples, rng_seed, *args)
  return _frozen(tokens.astype(np.uint8), labels)  # 17 ids fit a byte.


@functools.lru_cache(maxsize=2)
def _tfds_split(name, directory, split, num_samples):
  """A whole TFDS split read into memory, in its stored (deterministic) order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_lib.hide_accelerators_from_tf()
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
    samples = config.get('num_samples')  # Audio only.
    return (_tfds_split(name, directory, 'train', samples),
            _tfds_split(name, directory, _TFDS_EVAL_SPLIT[name], samples))
  if name == 'shapes':
    args = (config.image_size, config.image_channels)
  elif name == 'tones':
    args = (config.num_samples,)
  else:
    args = (config.listops_min_len, config.listops_max_len)
  return (_generated_split(name, config.seed, 0, config.num_train_examples, args),
          _generated_split(name, config.seed, 1, config.num_eval_examples, args))


# ----------------------------------------------------------------------------- batches


def _batch(convert, split, indices):
  return {'inputs': convert(split.raw[indices]), 'label': split.labels[indices]}


def _train_batches(convert, train, batch_size, seed, start_step, rows):
  step = start_step
  while True:
    indices = ordering.global_batch_indices(step, batch_size, len(train.labels), seed)
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
  The config is taken as checked (tasks.check_config).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, {process_count})')
  rows = ordering.process_slice(config.batch_size, process_index, process_count)
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
  train, evals = _splits(config)
  num_classes = _NUM_CLASSES[config.dataset]
  count = config.num_eval_batches * config.batch_size or len(evals.labels)
  eval_labels = evals.labels[np.arange(count) % len(evals.labels)]
  majority = np.bincount(train.labels, minlength=num_classes).argmax()
  return {'baseline_chance_loss': float(np.log(num_classes)),
          'baseline_chance_accuracy': 1.0 / num_classes,
          'baseline_majority_accuracy': float(np.mean(eval_labels == majority))}
