"""configs/image.py, image_64.py and audio.py: what they promise, and that they train.

Full-length sequences (1024, 4096 and 4000 tokens) with a tiny model for two
steps; then a short run showing the generated image task is learnable.
"""
import importlib.util
import os

import numpy as np
import pytest

from linformer_jax import classification_data
from linformer_jax import train
from linformer_jax.metrics import read_metrics

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

# Small model, data and schedule; sequence lengths stay the configs' own.
TINY = {'batch_size': 4, 'num_train_steps': 2, 'warmup_steps': 1, 'log_every_steps': 1,
        'eval_every_steps': 2, 'checkpoint_every_steps': 2, 'num_eval_batches': 1,
        'num_train_examples': 16, 'num_eval_examples': 8, 'model.num_layers': 1,
        'model.emb_dim': 16, 'model.mlp_dim': 32, 'model.num_heads': 2}


def _config(name):
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(CONFIGS, name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize('name,dataset,seq_len,feature_dim', [
    ('image.py', 'shapes', 1024, 1), ('image_64.py', 'shapes', 4096, 1),
    ('audio.py', 'tones', 4000, 2)])
def test_config_promises(name, dataset, seq_len, feature_dim):
  config = _config(name)
  assert (config.task, config.dataset, config.model.attention) == (
      'classification', dataset, 'linear')
  info = classification_data.dataset_info(config)
  assert (info['seq_len'], info['feature_dim'], info['num_classes']) == (seq_len, feature_dim, 8)


def test_image_64_changes_only_the_size():
  base, variant = _config('image.py').to_dict(), _config('image_64.py').to_dict()
  assert variant.pop('image_size') == 64 and base.pop('image_size') == 32
  assert variant == base


# image_64.py differs from image.py only in image_size (above), so it is not run again.
@pytest.mark.parametrize('name', ['image.py', 'audio.py'])
def test_config_trains_two_steps(name, tmp_path):
  config = _config(name)
  config.update_from_flattened_dict(TINY)
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [1, 2]
  assert np.isfinite(records[-1]['train_loss']) and 0 <= records[-1]['eval_accuracy'] <= 1
  assert os.listdir(tmp_path / 'checkpoints') == ['2']


def test_loss_falls_on_shapes(tmp_path):
  # 4x4 patches of 16x16 images (16 tokens): with one pixel per token the model
  # needs several hundred steps before its loss leaves ln 8 (see configs/image.py),
  # too long for a unit test; the pipeline and model are the same.
  config = _config('image.py')
  config.update_from_flattened_dict({
      'image_size': 16, 'patch_size': 4, 'batch_size': 16, 'num_train_steps': 400,
      'warmup_steps': 20, 'learning_rate': 3e-3, 'log_every_steps': 100,
      'eval_every_steps': 400, 'checkpoint_every_steps': 400, 'num_eval_batches': 8,
      'num_train_examples': 2000, 'num_eval_examples': 128, 'model.num_layers': 2,
      'model.emb_dim': 32, 'model.mlp_dim': 64, 'model.num_heads': 4})
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path))
  first, last = records[0]['train_loss'], records[-1]['train_loss']
  # Chance is ln 8 = 2.08 nats and 12.5%; this run reaches about 1.63 and 35%.
  assert last < first - 0.3, (first, last)
  assert records[-1]['eval_accuracy'] > 0.25
