"""What `config.task` decides: the data, the model and what it is scored on.

`create(config)` checks the whole config once (`check_config`: the keys every
task shares, then the task's data keys; cheap, reads no data) and returns a
`Task` of callables and the model. `TASKS` maps config.task to its builder,
`DATA_MODULES` to its data module.
"""
import dataclasses
import functools
import importlib
from typing import Any, Callable

import jax
import jax.numpy as jnp

from linformer_jax import models
from linformer_jax.data import check_int
from linformer_jax.model_config import ModelConfig

# config.task -> its data module, imported only when chosen: data.text imports
# TensorFlow (TFDS), seconds and hundreds of MiB that other tasks do not need.
DATA_MODULES = {'mlm': 'linformer_jax.data.text',
                'classification': 'linformer_jax.data.classification',
                'recall': 'linformer_jax.data.recall',
                'lm': 'linformer_jax.data.text'}


@dataclasses.dataclass(frozen=True)
class Task:
  # (config, *, start_step, process_index, process_count) -> (train_iter, eval_batches)
  create_datasets: Callable
  baselines: Callable                # config -> {'baseline_...': float}; reads the data
  model: Any                         # flax module: batch['inputs'] -> logits
  input_spec: jax.ShapeDtypeStruct   # one example's inputs, with batch dimension 1
  targets: Callable                  # batch -> (int targets, float weights), same shape


def _masked_targets(batch):
  # Scored where weights are 1 (masked bytes, recall queries), nowhere else.
  return batch['targets'], batch['weights']


def _label_targets(batch):
  return batch['label'], jnp.ones(batch['label'].shape, jnp.float32)


def _tokens_spec(config):
  return jax.ShapeDtypeStruct((1, config.seq_len), jnp.int32)


def data_module(task: str):
  """The data module of config.task = `task`: check_config, create_datasets, baselines."""
  return importlib.import_module(DATA_MODULES[task])


def _lm(config, text) -> Task:
  if not config.model.get('causal', False):
    raise ValueError("task 'lm' needs config.model.causal=True: a next-byte model must not see "
                     'the byte it predicts')
  model_cfg = build_model_config(config, seq_len=config.seq_len, vocab_size=text.VOCAB_SIZE,
                                 pad_id=text.PAD_ID)
  # The same rows as 'mlm', unmasked: next-byte targets, weights 0 on padding.
  return Task(functools.partial(text.create_datasets, next_byte=True),
              functools.partial(text.baselines, next_byte=True), models.LanguageModel(model_cfg),
              _tokens_spec(config), _masked_targets)


def _mlm(config, text) -> Task:
  model_cfg = build_model_config(config, seq_len=config.seq_len, vocab_size=text.VOCAB_SIZE,
                                 pad_id=text.PAD_ID)
  return Task(text.create_datasets, text.baselines, models.MLMModel(model_cfg),
              _tokens_spec(config), _masked_targets)


def _classification(config, classification) -> Task:
  info = classification.dataset_info(config)
  model_cfg = build_model_config(
      config, seq_len=info['seq_len'], vocab_size=info['vocab_size'] or 0,
      feature_dim=info['feature_dim'] or 0, pad_id=info['pad_id'],
      num_classes=info['num_classes'], grid_width=info['grid_width'])
  if info['feature_dim']:
    spec = jax.ShapeDtypeStruct((1, info['seq_len'], info['feature_dim']), jnp.float32)
  else:
    spec = jax.ShapeDtypeStruct((1, info['seq_len']), jnp.int32)
  return Task(classification.create_datasets, classification.baselines,
              models.Classifier(model_cfg), spec, _label_targets)


def _recall(config, recall) -> Task:
  # causal comes from config.model, like every other model field.
  model_cfg = build_model_config(config, seq_len=config.seq_len,
                                 vocab_size=recall.vocab_size(config), pad_id=recall.PAD_ID)
  return Task(recall.create_datasets, recall.baselines, models.MLMModel(model_cfg),
              _tokens_spec(config), _masked_targets)


# config.task -> Task builder, given the config and the task's data module.
TASKS = {'mlm': _mlm, 'classification': _classification, 'recall': _recall, 'lm': _lm}


def check_config(config) -> None:
  """Every check a config gets, before any data or parameters: ValueError naming the bad value.

  The keys every task shares here, then the data module's keys; the model's
  are checked by ModelConfig when `create` builds it.
  """
  if config.task not in TASKS:
    raise ValueError(f'unknown task {config.task!r}; valid: {sorted(TASKS)}')
  check_int('seed', config.seed, 0)
  for name in ('batch_size', 'num_train_steps', 'log_every_steps', 'eval_every_steps',
               'checkpoint_every_steps', 'keep_checkpoints'):
    check_int(name, config[name], 1)
  check_int('num_eval_batches', config.num_eval_batches, 0)
  check_int('warmup_steps', config.warmup_steps, 0)
  if config.weight_decay < 0:
    raise ValueError(f'config.weight_decay must be >= 0, got {config.weight_decay}')
  for name in ('learning_rate', 'grad_clip_norm'):
    if not config[name] > 0:
      raise ValueError(f'config.{name} must be positive, got {config[name]}')
  data_module(config.task).check_config(config)


def create(config) -> Task:
  """The Task of `config.task`, after `check_config`; builds the model, reads no data."""
  check_config(config)
  return TASKS[config.task](config, data_module(config.task))


def build_model_config(config, *, seq_len, **data_fields) -> ModelConfig:
  """ModelConfig from config.model plus the fields the data decides (vocabulary, classes).

  max_len is the input length (seq_len, plus one for a prepended CLS token)
  unless config.model.max_len asks for more.
  """
  fields = dict(config.model.items())
  valid = {f.name for f in dataclasses.fields(ModelConfig)} - set(data_fields)
  unknown = sorted(set(fields) - valid)
  if unknown:
    raise ValueError(f'unknown config.model fields {unknown}; valid: {sorted(valid)}')
  needed = seq_len + int(fields.get('pooling') == 'cls')
  max_len = fields.pop('max_len', None)
  if max_len is None:
    max_len = needed
  elif max_len < needed:
    raise ValueError(f'seq_len={seq_len} (input length {needed}) exceeds config.model.max_len='
                     f'{max_len}, the length of the position table and Linformer projections')
  return ModelConfig(**fields, **data_fields, max_len=max_len)
