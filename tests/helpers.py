"""What several test modules share: config paths and the one TINY override set.

Test modules import it as `helpers` (pytest puts tests/ on sys.path), and so
do the subprocesses that test_trainer.py starts.
"""
import json
import os
import subprocess
import sys

from linformer_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'configs')

# A model small enough to compile in seconds on CPU, whatever the config.
TINY_MODEL = {'model.num_layers': 1, 'model.num_heads': 2, 'model.emb_dim': 32,
              'model.mlp_dim': 64, 'model.linformer_k': 16, 'model.chunk_size': 16}
# Short sequences and small generated sets; each applies where the config has the key.
TINY_DATA = {'seq_len': 64, 'batch_size': 8, 'num_eval_batches': 2, 'image_size': 8,
             'patch_size': 2, 'num_samples': 256, 'frame_size': 8, 'listops_min_len': 8,
             'listops_max_len': 48, 'num_train_examples': 64, 'num_eval_examples': 16,
             'num_pairs': 4, 'key_vocab_size': 16, 'value_vocab_size': 16}
# 100 steps: enough for the MLM loss to fall, with checkpoints every 10.
TINY_SCHEDULE = {'num_train_steps': 100, 'warmup_steps': 10, 'learning_rate': 3e-3,
                 'log_every_steps': 10, 'eval_every_steps': 50, 'checkpoint_every_steps': 10,
                 'keep_checkpoints': 3}


def config_path(name: str) -> str:
  return os.path.join(CONFIGS, name)


def tiny_overrides(name: str, **extra) -> dict:
  """TINY_MODEL, TINY_SCHEDULE and the TINY_DATA keys configs/<name> has, then `extra`."""
  config = config_lib.load(config_path(name))
  data = {k: v for k, v in TINY_DATA.items() if k in config}
  model = dict(TINY_MODEL)
  if config.model.get('layer_attention'):  # a hybrid keeps one layer per entry of its pattern
    model['model.num_layers'] = len(config.model.layer_attention.split(','))
  return {**model, **TINY_SCHEDULE, **data, **extra}


def load(name: str, overrides: dict | None = None):
  """configs/<name> with dotted overrides."""
  return config_lib.load(config_path(name), overrides)


def measure_on_fake_devices(module: str, devices: int, timeout: int):
  """Runs tests/<module>.py's `_measure()` in a fresh process that sees `devices`
  faked host devices (XLA_FLAGS set before JAX is imported); returns the JSON
  object it prints last."""
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'
  tests = os.path.join(REPO, 'tests')
  proc = subprocess.run(
      [sys.executable, '-c', f'import sys; sys.path.insert(0, {tests!r}); '
       f'import {module}; {module}._measure()'],
      env={**os.environ, 'XLA_FLAGS': flags.strip()}, capture_output=True, text=True,
      timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])
