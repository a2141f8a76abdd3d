"""Tests of the classification pipeline and its generators (small sizes; one test imports TF)."""
import importlib.resources
import statistics
import sys

from ml_collections import ConfigDict
import numpy as np
import pytest

from linformer_jax.data import classification as cd
from linformer_jax.data import generators as sd
from linformer_jax.data import ordering


def _config(dataset, **kw):
  # The keys configs/image.py, audio.py and listops.py set, at their values.
  base = dict(dataset=dataset, seed=0, batch_size=8, num_eval_batches=2,
              num_train_examples=48, num_eval_examples=24, data_dir='/nonexistent',
              image_size=32, image_channels=1, patch_size=1, num_samples=8000, frame_size=2,
              listops_min_len=500, listops_max_len=2000)
  base.update(kw)
  return ConfigDict(base)


def _equal_batches(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in ('inputs', 'label'))


def _take(it, n):
  return [next(it) for _ in range(n)]


# ----------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize('image_size,patch_size,channels', [
    (32, 1, 1), (32, 4, 1), (64, 1, 1), (64, 4, 1), (32, 4, 3)])
def test_shapes_batches(image_size, patch_size, channels):
  config = _config('shapes', image_size=image_size, patch_size=patch_size,
                   image_channels=channels)
  info = cd.dataset_info(config)
  tokens = (image_size // patch_size) ** 2
  assert info == dict(num_classes=8, seq_len=tokens, feature_dim=patch_size ** 2 * channels,
                      vocab_size=None, pad_id=None, grid_width=image_size // patch_size)
  train, evals = cd.create_datasets(config)
  for batch in [next(train)] + evals:
    assert batch['inputs'].shape == (8, tokens, patch_size ** 2 * channels)
    assert batch['inputs'].dtype == np.float32 and batch['label'].dtype == np.int32
    assert 0.0 <= batch['inputs'].min() and batch['inputs'].max() <= 1.0
    assert ((0 <= batch['label']) & (batch['label'] < 8)).all()


@pytest.mark.parametrize('num_samples,frame_size', [(8000, 2), (8000, 4), (1024, 1)])
def test_tones_batches(num_samples, frame_size):
  config = _config('tones', num_samples=num_samples, frame_size=frame_size, num_train_examples=16,
                   num_eval_examples=8, batch_size=4)
  info = cd.dataset_info(config)
  assert info == dict(num_classes=8, seq_len=num_samples // frame_size, feature_dim=frame_size,
                      vocab_size=None, pad_id=None, grid_width=0)
  train, evals = cd.create_datasets(config)
  for batch in [next(train)] + evals:
    assert batch['inputs'].shape == (4, num_samples // frame_size, frame_size)
    assert batch['inputs'].dtype == np.float32 and batch['label'].dtype == np.int32
    assert -1.0 <= batch['inputs'].min() and batch['inputs'].max() <= 1.0
    assert batch['inputs'].std() > 0.01


def test_listops_batches():
  config = _config('listops', listops_min_len=50, listops_max_len=300)
  info = cd.dataset_info(config)
  assert info == dict(num_classes=10, seq_len=300, feature_dim=None,
                      vocab_size=sd.LISTOPS_VOCAB_SIZE, pad_id=sd.PAD_ID, grid_width=0)
  assert sd.LISTOPS_VOCAB_SIZE == 17 and sd.LISTOPS_VOCAB[sd.PAD_ID] == '<pad>'
  train, evals = cd.create_datasets(config)
  for batch in [next(train)] + evals:
    assert batch['inputs'].shape == (8, 300) and batch['inputs'].dtype == np.int32
    assert batch['label'].dtype == np.int32
    assert (batch['inputs'][:, 0] == sd.CLS_ID).all()
    assert ((0 <= batch['inputs']) & (batch['inputs'] < sd.LISTOPS_VOCAB_SIZE)).all()


def test_tfds_dataset_info_needs_no_data():
  assert cd.dataset_info(_config('cifar10', patch_size=4)) == dict(
      num_classes=10, seq_len=64, feature_dim=48, vocab_size=None, pad_id=None, grid_width=8)
  assert cd.dataset_info(_config('mnist', patch_size=7))['seq_len'] == 16
  info = cd.dataset_info(_config('speech_commands', num_samples=16000, frame_size=4))
  assert (info['num_classes'], info['seq_len'], info['feature_dim']) == (12, 4000, 4)


# ----------------------------------------------------------------------------- generators


@pytest.mark.parametrize('generate', [
    lambda n, seed: sd.generate_shapes(n, seed, 32),
    lambda n, seed: sd.generate_tones(n, seed, 512),
    lambda n, seed: sd.generate_listops(n, seed, 20, 100),
])
def test_generators_deterministic_and_seeded(generate):
  x0, y0 = generate(24, 0)
  x1, y1 = generate(24, 0)
  x2, y2 = generate(24, 1)
  np.testing.assert_array_equal(x0, x1)
  np.testing.assert_array_equal(y0, y1)
  assert not np.array_equal(x0, x2)
  assert y0.dtype == np.int32 and len(y0) == 24


def test_balanced_classes():
  _, labels = sd.generate_shapes(80, 3, 32)
  np.testing.assert_array_equal(np.bincount(labels), [10] * 8)
  _, labels = sd.generate_tones(81, 3, 256)
  counts = np.bincount(labels)
  assert len(counts) == 8 and counts.max() - counts.min() <= 1
  # Through the pipeline: each set is balanced.
  train, evals = cd._splits(_config('shapes', num_train_examples=64, num_eval_examples=16))
  np.testing.assert_array_equal(np.bincount(train.labels), [8] * 8)
  np.testing.assert_array_equal(np.bincount(evals.labels), [2] * 8)


def test_train_and_eval_sets_differ():
  for dataset in ('shapes', 'tones', 'listops'):
    config = _config(dataset, num_train_examples=16, num_eval_examples=16, num_samples=512,
                     listops_min_len=20, listops_max_len=100)
    train, evals = cd._splits(config)
    assert not np.array_equal(train.raw, evals.raw), dataset
    other, _ = cd._splits(_config(**{**config.to_dict(), 'seed': 1}))
    assert not np.array_equal(train.raw, other.raw), dataset


def _nearest_centroid_accuracy(features, labels, num_train):
  f = (features - features.mean(0)) / (features.std(0) + 1e-6)
  centroids = np.stack([f[:num_train][labels[:num_train] == k].mean(0)
                        for k in range(labels.max() + 1)])
  pred = np.argmin(((f[num_train:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  return (pred == labels[num_train:]).mean()


def test_classes_are_separable():
  # Translation-invariant features (|FFT|) with a nearest-centroid rule beat chance (1/8)
  # by far (~0.8), while raw pixels do not (~0.25): classes differ, and position is random.
  images, labels = sd.generate_shapes(1000, 0, 32)
  features = np.log1p(np.abs(np.fft.fft2(images[..., 0]))).reshape(len(images), -1)
  assert _nearest_centroid_accuracy(features, labels, 800) > 0.5
  assert _nearest_centroid_accuracy(images.reshape(1000, -1), labels, 800) < 0.4
  waves, labels = sd.generate_tones(480, 0, 2048)
  spectrum = np.abs(np.fft.rfft(waves[..., 0], axis=1))[:, :1024].reshape(480, 32, 32).mean(-1)
  envelope = np.sort(np.abs(waves[..., 0]).reshape(480, 32, 64).max(-1), axis=1)
  features = np.concatenate([np.log(spectrum), envelope], axis=1)
  assert _nearest_centroid_accuracy(features, labels, 320) > 0.25


# ----------------------------------------------------------------------------- ListOps


def _evaluate(tokens):
  """Independent recursive evaluation of a ListOps expression given as token ids."""
  it = iter(tokens)

  def node(tok):
    word = sd.LISTOPS_VOCAB[tok]
    if word.isdigit():
      return int(word)
    args = []
    for nxt in it:
      if sd.LISTOPS_VOCAB[nxt] == ']':
        break
      args.append(node(nxt))
    assert 2 <= len(args) <= 10
    return {'[MAX': max, '[MIN': min, '[MED': lambda a: int(statistics.median(a)),
            '[SM': lambda a: sum(a) % 10}[word](args)

  value = node(next(it))
  assert next(it, None) is None, 'tokens after the expression'
  return value


def _depth(tokens):
  depth = deepest = 0
  for tok in tokens:
    depth += tok in sd.LISTOPS_OPERATOR_IDS
    deepest = max(deepest, depth + (tok in sd.DIGIT_IDS))
    depth -= tok == sd.END_ID
  return deepest


@pytest.mark.parametrize('min_len,max_len,num', [(500, 2000, 60), (10, 60, 200)])
def test_listops_labels_and_lengths(min_len, max_len, num):
  tokens, labels = sd.generate_listops(num, 7, min_len, max_len)
  assert tokens.shape == (num, max_len) and tokens.dtype == np.int32
  for row, label in zip(tokens, labels):
    length = int((row != sd.PAD_ID).sum())
    assert row[0] == sd.CLS_ID and (row[length:] == sd.PAD_ID).all()
    assert min_len < length - 1 < max_len  # LRA's strict bounds on the expression.
    assert _evaluate(row[1:length].tolist()) == label
    assert _depth(row[1:length]) <= 10



# ----------------------------------------------------------------------------- resume and shards


@pytest.mark.parametrize('dataset', ['shapes', 'listops'])
def test_resume_contract(dataset):
  # 48 examples, batch 8: steps 0..11 cover two epochs.
  config = _config(dataset, listops_min_len=20, listops_max_len=100, patch_size=4)
  full = _take(cd.create_datasets(config)[0], 12)
  resumed = _take(cd.create_datasets(config, start_step=5)[0], 7)
  assert _equal_batches(full[5:], resumed)
  # The global batch is exactly the rows ordering.global_batch_indices names.
  train, _ = cd._splits(config)
  indices = ordering.global_batch_indices(9, 8, 48, config.seed)
  np.testing.assert_array_equal(full[9]['label'], train.labels[indices])


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_shards_concatenate(process_count):
  config = _config('tones', num_samples=256, frame_size=2)
  train, evals = cd.create_datasets(config, start_step=3)
  single = _take(train, 3)
  shards = [cd.create_datasets(config, start_step=3, process_index=p,
                               process_count=process_count) for p in range(process_count)]
  shard_train = [_take(t, 3) for t, _ in shards]
  for key in ('inputs', 'label'):
    for step in range(3):
      parts = [s[step][key] for s in shard_train]
      assert parts[0].shape[0] == 8 // process_count
      np.testing.assert_array_equal(np.concatenate(parts), single[step][key])
    for i in range(2):
      np.testing.assert_array_equal(np.concatenate([e[i][key] for _, e in shards]),
                                    evals[i][key])
  with pytest.raises(ValueError, match='process_index'):
    cd.create_datasets(config, process_index=process_count, process_count=process_count)
  with pytest.raises(ValueError, match='divisible'):
    cd.create_datasets(config, process_count=3)


def test_eval_batches_identical_and_wrap():
  config = _config('shapes', num_eval_examples=12, num_eval_batches=3)
  _, first = cd.create_datasets(config)
  _, second = cd.create_datasets(config)
  assert len(first) == 3 and _equal_batches(first, second)
  # 3 batches of 8 from 12 examples: the eval set, then its start again.
  _, evals = cd._splits(config)
  labels = np.concatenate([b['label'] for b in first])
  np.testing.assert_array_equal(labels, evals.labels[np.arange(24) % 12])


# ----------------------------------------------------------------------------- conversion


def test_image_patches_order():
  image = np.arange(4 * 4 * 2, dtype=np.uint8).reshape(1, 4, 4, 2)
  patches = cd.image_patches(image, 2)
  assert patches.shape == (1, 4, 8) and patches.dtype == np.float32
  # Patch 1 is the top-right 2x2 block, features in (row, column, channel) order.
  np.testing.assert_allclose(patches[0, 1] * 255, image[0, 0:2, 2:4].reshape(-1))
  np.testing.assert_allclose(patches[0, 2] * 255, image[0, 2:4, 0:2].reshape(-1))
  np.testing.assert_allclose(cd.image_patches(image, 1)[0] * 255, image[0].reshape(16, 2))


def test_audio_conversion():
  waves = np.array([[-32768, 0, 16384, 32767]], np.int16)
  frames = cd.audio_frames(waves, 2)
  np.testing.assert_allclose(frames, [[[-1.0, 0.0], [0.5, 32767 / 32768]]])
  np.testing.assert_array_equal(cd.crop_or_pad(np.arange(10), 4), [3, 4, 5, 6])
  np.testing.assert_array_equal(cd.crop_or_pad(np.arange(3), 5), [0, 1, 2, 0, 0])


def test_tfds_example_to_raw():
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  raw, label = cd.tfds_example_to_raw('cifar10', {'image': image, 'label': np.int64(7)}, 8000)
  assert raw is image and label == 7
  with pytest.raises(ValueError, match='mnist'):
    cd.tfds_example_to_raw('mnist', {'image': image, 'label': 1}, 8000)
  # speech_commands stores 16-bit PCM as int64; clips are at most 1 s.
  audio = np.arange(16000, dtype=np.int64) - 8000
  raw, label = cd.tfds_example_to_raw('speech_commands', {'audio': audio, 'label': 3}, 8000)
  assert raw.dtype == np.int16 and label == 3
  np.testing.assert_array_equal(raw, audio[4000:12000])
  raw, _ = cd.tfds_example_to_raw('speech_commands', {'audio': audio[:5], 'label': 3}, 8)
  np.testing.assert_array_equal(raw, [-8000, -7999, -7998, -7997, -7996, 0, 0, 0])
  inputs = cd._converter(_config('speech_commands', frame_size=2))(raw[None])
  assert inputs.shape == (1, 4, 2) and inputs.dtype == np.float32


# ----------------------------------------------------------------------------- check_config


@pytest.mark.parametrize('overrides,match', [
    (dict(dataset='imagenet'), r"'imagenet'.*shapes.*listops.*cifar10.*speech_commands"),
    (dict(dataset='shapes', image_size=32, patch_size=5), 'patch_size=5'),
    (dict(dataset='mnist', patch_size=8), 'patch_size=8.*28x28'),
    (dict(dataset='tones', num_samples=8000, frame_size=3), 'frame_size=3'),
    (dict(dataset='listops', listops_min_len=500, listops_max_len=400), 'listops_min_len=500'),
    (dict(dataset='listops', listops_min_len=5000, listops_max_len=8000), '4000'),
    (dict(dataset='shapes', image_channels=2), 'image_channels=2'),
])
def test_check_config_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    cd.check_config(_config(**overrides))


@pytest.mark.parametrize('dataset,alternative', [
    ('cifar10', 'shapes'), ('mnist', 'shapes'), ('speech_commands', 'tones')])
def test_unprepared_tfds_dataset(tmp_path, dataset, alternative):
  config = _config(dataset, data_dir=str(tmp_path), patch_size=4, frame_size=2)
  (tmp_path / dataset / 'incomplete.ABC_1.0.0').mkdir(parents=True)  # A half-built copy.
  with pytest.raises(ValueError) as error:
    cd.check_config(config)
  message = str(error.value)
  assert f'tfds build {dataset} --data_dir={tmp_path}' in message
  assert str(tmp_path) in message and repr(alternative) in message
  with pytest.raises(ValueError, match='not prepared'):
    cd.create_datasets(config)


@pytest.mark.parametrize('dataset', cd.DATASETS)
def test_a_missing_key_is_named(dataset):
  config = _config(dataset)
  cd.dataset_info(config)  # Complete: no error.
  for key in cd.REQUIRED_KEYS[dataset]:
    incomplete = _config(dataset)
    del incomplete[key]
    with pytest.raises(ValueError, match=rf"config.dataset='{dataset}' needs config keys \['{key}'\]"):
      cd.dataset_info(incomplete)


# ----------------------------------------------------------------------------- real TFDS files


def _store_fake_tfds(tfds, name, features, splits, data_dir):
  """Writes a tiny prepared TFDS dataset `name`, as `tfds build` would."""
  try:
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version='1.0.0', features=features, split_datasets=splits,
        data_dir=data_dir, disable_shuffling=True)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f'this tfds cannot write a fake dataset: {e!r}')


def test_reads_prepared_tfds_datasets(tmp_path, monkeypatch):
  # Imports TensorFlow (~10 s on 2 busy cores); everything else here is numpy.
  tf = pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  # Some tfds installs lack the importlib_resources backport needed only to write data.
  monkeypatch.setitem(sys.modules, 'importlib_resources', importlib.resources)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(12) % 10
  features = tfds.features.FeaturesDict({'image': tfds.features.Image(shape=(32, 32, 3)),
                                         'label': tfds.features.ClassLabel(num_classes=10)})
  split = lambda n: tf.data.Dataset.from_tensor_slices({'image': images[:n], 'label': labels[:n]})
  _store_fake_tfds(tfds, 'cifar10', features, {'train': split(12), 'test': split(4)},
                   str(tmp_path))
  config = _config('cifar10', data_dir=str(tmp_path), patch_size=4, batch_size=4,
                   num_eval_batches=1)
  cd.check_config(config)
  train, evals = cd.create_datasets(config, start_step=2)
  batch = next(train)
  indices = ordering.global_batch_indices(2, 4, 12, config.seed)
  np.testing.assert_array_equal(batch['label'], labels[indices])
  np.testing.assert_allclose(batch['inputs'], cd.image_patches(images[indices], 4))
  np.testing.assert_array_equal(evals[0]['label'], labels[:4])

  # Clips of varying length, stored as int64 like the real speech_commands.
  clips = [rng.integers(-32768, 32768, n) for n in (16000, 12000, 16000, 9000)]
  features = tfds.features.FeaturesDict({
      'audio': tfds.features.Audio(shape=(None,), dtype=np.int64, sample_rate=16000),
      'label': tfds.features.ClassLabel(num_classes=12)})
  signature = {'audio': tf.TensorSpec([None], tf.int64), 'label': tf.TensorSpec([], tf.int64)}
  split = lambda: tf.data.Dataset.from_generator(
      lambda: ({'audio': c, 'label': i} for i, c in enumerate(clips)), output_signature=signature)
  _store_fake_tfds(tfds, 'speech_commands', features,
                   {'train': split(), 'validation': split()}, str(tmp_path))
  config = _config('speech_commands', data_dir=str(tmp_path), num_samples=10000, frame_size=4,
                   batch_size=4, num_eval_batches=1)
  _, evals = cd.create_datasets(config)
  expected = np.stack([cd.crop_or_pad(c, 10000) for c in clips]).astype(np.int16)
  np.testing.assert_allclose(evals[0]['inputs'], cd.audio_frames(expected, 4))
  np.testing.assert_array_equal(evals[0]['label'], np.arange(4))


def test_baselines(monkeypatch):
  # Hand-made splits: 3 classes, train majority class 2; eval set = 2 batches of 4.
  train = cd._frozen(np.zeros((6, 1), np.uint8), np.array([2, 2, 2, 0, 1, 1]))
  evals = cd._frozen(np.zeros((5, 1), np.uint8), np.array([2, 0, 2, 1, 1]))
  monkeypatch.setattr(cd, '_splits', lambda config: (train, evals))
  monkeypatch.setitem(cd._NUM_CLASSES, 'tones', 3)
  got = cd.baselines(_config('tones', batch_size=4, num_eval_batches=2))
  # The eval batches wrap: labels 2 0 2 1 1 2 0 2, of which 4 are class 2.
  assert got == {'baseline_chance_loss': np.log(3), 'baseline_chance_accuracy': 1 / 3,
                 'baseline_majority_accuracy': 0.5}
  got = cd.baselines(_config('tones', batch_size=4, num_eval_batches=0))  # The whole split.
  assert got['baseline_majority_accuracy'] == 2 / 5


def test_baselines_of_generated_listops():
  config = _config('listops', listops_min_len=8, listops_max_len=48, num_train_examples=200,
                   num_eval_examples=64, num_eval_batches=8)
  got = cd.baselines(config)
  assert got['baseline_chance_accuracy'] == 1 / sd.LISTOPS_NUM_CLASSES
  train, evals = cd._splits(config)
  majority = np.bincount(train.labels).argmax()
  assert got['baseline_majority_accuracy'] == np.mean(evals.labels == majority)
