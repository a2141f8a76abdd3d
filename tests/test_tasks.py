"""tasks.py: one check of the whole config, before any data is read; the Task each task builds."""
import jax
import jax.numpy as jnp
import pytest

from linformer_jax import models
from linformer_jax import tasks
from linformer_jax.data import classification
from linformer_jax.data import recall
from linformer_jax.data import text

import helpers


@pytest.mark.parametrize('key, value, match', [
    ('task', 'translate', r"unknown task 'translate'; valid: \['classification', 'lm', 'mlm', 'recall'\]"),
    ('batch_size', 0, r'config.batch_size=0 must be an integer >= 1'),
    ('seed', -1, r'config.seed=-1 must be an integer >= 0'),
    ('num_eval_batches', -1, r'config.num_eval_batches=-1 must be an integer >= 0'),
    ('warmup_steps', -1, r'config.warmup_steps=-1 must be an integer >= 0'),
    ('keep_checkpoints', 0, r'config.keep_checkpoints=0 must be an integer >= 1'),
    ('weight_decay', -0.1, r'weight_decay must be >= 0, got -0.1'),
    ('learning_rate', 0.0, r'learning_rate must be positive, got 0.0'),
    ('grad_clip_norm', -1.0, r'grad_clip_norm must be positive, got -1.0'),
])
@pytest.mark.parametrize('name', ['mlm.py', 'image.py', 'recall.py'])
def test_shared_keys_are_checked_for_every_task(name, key, value, match):
  config = helpers.load(name, {key: value})
  with pytest.raises(ValueError, match=match):
    tasks.check_config(config)


@pytest.mark.parametrize('name, module', [('mlm.py', text), ('image.py', classification),
                                          ('recall.py', recall)])
def test_the_data_module_checks_its_keys_and_reads_nothing(name, module, monkeypatch):
  def too_late(*args, **kwargs):
    raise AssertionError('data read during validation')

  monkeypatch.setattr(module, 'create_datasets', too_late)
  monkeypatch.setattr(module, 'baselines', too_late)
  task = tasks.create(helpers.load(name, {**helpers.TINY_MODEL, 'data_dir': '/nonexistent'}))
  assert task.create_datasets is too_late and task.baselines is too_late
  bad = {'mlm.py': {'mask_rate': 1.5}, 'image.py': {'patch_size': 5},
         'recall.py': {'num_pairs': 100}}[name]
  with pytest.raises(ValueError, match=f'config.{next(iter(bad))}='):
    tasks.create(helpers.load(name, bad))


def test_model_fields_are_checked():
  with pytest.raises(ValueError, match=r"unknown config.model fields \['bogus'\]"):
    tasks.create(helpers.load('mlm.py', {'model.bogus': 1}))
  with pytest.raises(ValueError, match=r'seq_len=64 .*max_len=32'):
    tasks.create(helpers.load('mlm.py', {'seq_len': 64, 'model.max_len': 32}))


@pytest.mark.parametrize('name, model, shape, dtype', [
    ('mlm.py', models.MLMModel, (1, 1024), jnp.int32),
    ('image.py', models.Classifier, (1, 1024, 1), jnp.float32),
    ('listops.py', models.Classifier, (1, 2000), jnp.int32),
    ('recall.py', models.MLMModel, (1, 64), jnp.int32)])
def test_each_task_builds_its_model_and_input_spec(name, model, shape, dtype):
  task = tasks.create(helpers.load(name))
  assert type(task.model) is model
  assert (task.input_spec.shape, task.input_spec.dtype) == (shape, dtype)


@pytest.mark.parametrize('causal', [False, True])
def test_recall_task_builds_mlm_model(causal):
  config = helpers.load('recall.py', {
      'seq_len': 64, 'num_pairs': 8, 'key_vocab_size': 16, 'value_vocab_size': 12,
      'batch_size': 8, 'model.causal': causal, 'model.attention': 'softmax',
      'model.num_layers': 1, 'model.num_heads': 2, 'model.emb_dim': 16, 'model.mlp_dim': 32})
  task = tasks.create(config)
  cfg = task.model.config
  assert (cfg.vocab_size, cfg.pad_id, cfg.causal, cfg.max_len) == (1 + 16 + 12, None, causal, 64)
  batch = next(task.create_datasets(config)[0])
  # Shapes only: abstract evaluation compiles and computes nothing.
  params = jax.eval_shape(task.model.init, jax.random.key(0), task.input_spec)
  logits = jax.eval_shape(task.model.apply, params, batch['inputs'])
  assert logits.shape == (8, 64, 29) and logits.dtype == jnp.float32
  targets, weights = task.targets(batch)
  assert targets is batch['targets'] and weights is batch['weights']
