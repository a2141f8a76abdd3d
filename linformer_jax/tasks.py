"""What `config.task` decides: the data module, the model and what it is scored on.

`TASKS` maps config.task to one small function per task. Each validates its
part of the config (the data module's `check_config`, the ModelConfig) without
reading any data, and imports its data module (and so TensorFlow) only when
chosen.
"""
import dataclasses
import functools
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp

from linformer_jax import layers
from linformer_jax.model_config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Task:
  data: Any                          # module: create_datasets(config, *, start_step, ...)
  model: Any                         # flax module: batch['inputs'] -> logits
  input_spec: jax.ShapeDtypeStruct   # one example's inputs, with batch dimension 1
  targets: Callable                  # batch -> (int targets, float weights), same shape


def _mlm(config) -> Task:
  from linformer_jax import input_pipeline as data  # pylint: disable=g-import-not-at-top
  data.check_config(config)
  model_cfg = build_model_config(config, seq_len=config.seq_len, vocab_size=data.VOCAB_SIZE,
                                 pad_id=data.PAD_ID)
  # Scored on the masked positions only: weights are 1 there, 0 elsewhere.
  targets = lambda batch: (batch['targets'], batch['weights'])
  return Task(data, layers.MLMModel(model_cfg),
              jax.ShapeDtypeStruct((1, config.seq_len), jnp.int32), targets)


def _lm(config) -> Task:
  from linformer_jax import input_pipeline as data  # pylint: disable=g-import-not-at-top
  data.check_config(config, next_byte=True)
  if not config.model.get('causal', False):
    raise ValueError("task 'lm' needs config.model.causal=True: a next-byte model must not see "
                     'the byte it predicts')
  model_cfg = build_model_config(config, seq_len=config.seq_len, vocab_size=data.VOCAB_SIZE,
                                 pad_id=data.PAD_ID)
  # The same rows as 'mlm', unmasked: next-byte targets, weights 0 on padding.
  next_byte = types.SimpleNamespace(
      create_datasets=functools.partial(data.create_datasets, next_byte=True),
      baselines=functools.partial(data.baselines, next_byte=True))
  targets = lambda batch: (batch['targets'], batch['weights'])
  return Task(next_byte, layers.LanguageModel(model_cfg),
              jax.ShapeDtypeStruct((1, config.seq_len), jnp.int32), targets)


def _classification(config) -> Task:
  from linformer_jax import classification_data as data  # pylint: disable=g-import-not-at-top
  data.check_config(config)
  info = data.dataset_info(config)
  model_cfg = build_model_config(
      config, seq_len=info['seq_len'], vocab_size=info['vocab_size'] or 0,
      feature_dim=info['feature_dim'] or 0, pad_id=info['pad_id'],
      num_classes=info['num_classes'], grid_width=info['grid_width'])
  if info['feature_dim']:
    spec = jax.ShapeDtypeStruct((1, info['seq_len'], info['feature_dim']), jnp.float32)
  else:
    spec = jax.ShapeDtypeStruct((1, info['seq_len']), jnp.int32)
  targets = lambda batch: (batch['label'], jnp.ones(batch['label'].shape, jnp.float32))
  return Task(data, layers.Classifier(model_cfg), spec, targets)


def _recall(config) -> Task:
  from linformer_jax import recall_data as data  # pylint: disable=g-import-not-at-top
  data.check_config(config)
  # causal comes from config.model, like every other model field.
  model_cfg = build_model_config(config, seq_len=config.seq_len,
                                 vocab_size=data.vocab_size(config), pad_id=data.PAD_ID)
  # Scored at the queries only: weights are 1 there, 0 elsewhere.
  targets = lambda batch: (batch['targets'], batch['weights'])
  return Task(data, layers.MLMModel(model_cfg),
              jax.ShapeDtypeStruct((1, config.seq_len), jnp.int32), targets)


TASKS = {'mlm': _mlm, 'classification': _classification, 'recall': _recall, 'lm': _lm}


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
