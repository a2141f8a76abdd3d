r"""Text from a trained causal LM (task 'lm'): the latest checkpoint of a workdir, sampled.

  python -m linformer_jax.generate --workdir=runs/lm --prompt='def ' --num_tokens=200 \
      [--temperature=0.8 --top_k=40 --seed=0]

The model is rebuilt from workdir/config.json (written by the training loop,
with the changes later runs were allowed to make) and only its parameters are
restored. The prompt, after a CLS token as every training row starts, goes
through the parallel causal kernels once (`LanguageModel.prefill`); then each
new byte costs one `LanguageModel.decode` step. Tokens are drawn from the bytes
and EOS only (PAD, MASK and CLS are never targets); temperature 0 is greedy
(argmax). EOS, the end of a document, prints as a line break.
"""
import functools
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from linformer_jax import models
from linformer_jax import tasks
from linformer_jax import workdir as workdir_lib
from linformer_jax.data import vocab


# Kept here for existing imports: the workdir module owns it.
load_config = workdir_lib.load_config


def load_model(workdir: str):
  """(LanguageModel, params, step) of the latest checkpoint in `workdir`; ValueError if none."""
  workdir = os.path.expanduser(workdir)
  config = workdir_lib.load_config(workdir)
  if config.get('task') != 'lm':
    raise ValueError(f'workdir {workdir!r} holds a {config.get("task")!r} run; generation needs a '
                     "causal language model, a run of task 'lm' (e.g. configs/lm.py).")
  model = tasks.TASKS['lm'](config, tasks.data_module('lm')).model  # No data check: only the model.
  params, step = workdir_lib.restore_params(workdir, lambda: jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params'])
  return model, params, step


def _allowed_ids(vocab_size):
  ids = jnp.arange(vocab_size)
  return (ids < 256) | (ids == vocab.EOS_ID)


def sample(logits, rng, *, temperature=0.0, top_k=0):
  """Next ids [batch] from logits [batch, vocab]: bytes and EOS only.

  temperature 0: argmax; else softmax(logits / temperature) restricted to the
  top_k most likely ids (0: all).
  """
  logits = jnp.where(_allowed_ids(logits.shape[-1]), logits, -jnp.inf)
  if temperature == 0:
    return jnp.argmax(logits, axis=-1)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  return jax.random.categorical(rng, logits, axis=-1)


def generate(model, params, prompt: str, num_tokens: int, *, temperature: float = 0.0,
             top_k: int = 0, seed: int = 0) -> np.ndarray:
  """`num_tokens` sampled ids [num_tokens] (bytes or EOS) continuing `prompt`.

  Raises ValueError, before any computation, for bad settings, a prompt
  longer than the model takes (max_len - 1 bytes after CLS) or a total length
  past `models.context_limit` (learned positions, softmax's KV cache).
  """
  cfg = model.config
  if num_tokens < 0:
    raise ValueError(f'num_tokens must be >= 0, got {num_tokens}')
  if temperature < 0:
    raise ValueError(f'temperature must be >= 0 (0: greedy), got {temperature}')
  if not 0 <= top_k <= cfg.vocab_size:
    raise ValueError(f'top_k must be in [0, {cfg.vocab_size}] (0: no limit), got {top_k}')
  ids = np.concatenate([[vocab.CLS_ID], vocab.encode(prompt)]).astype(np.int32)
  if len(ids) > cfg.max_len:
    raise ValueError(f'the prompt is {len(ids) - 1} bytes; this model takes at most '
                     f'{cfg.max_len - 1} (max_len={cfg.max_len} tokens, CLS included).')
  limit = models.context_limit(cfg)
  # The last sampled token is never fed back.
  if limit is not None and len(ids) + num_tokens - 1 > limit:
    bounded = [name for name, k in zip(cfg.layer_kinds, cfg.layer_records)
               if k is not None and k.bounded_context]
    why = ('learned positions' if cfg.position == 'learned'
           else f"{bounded[0]} attention's decoding state (a KV cache)")
    raise ValueError(
        f'{len(ids) - 1} prompt bytes + {num_tokens} new tokens exceed what this model can '
        f'decode: {limit} tokens including CLS ({why}, max_len={cfg.max_len}). Ask for at most '
        f'{limit - len(ids) + 1} tokens.')
  if num_tokens == 0:
    return np.zeros((0,), np.int32)
  how = dict(model=model, temperature=temperature, top_k=top_k)
  rngs = jax.random.split(jax.random.key(seed), num_tokens)
  token, cache = _prefill(params, jnp.asarray(ids)[None], rngs[0], **how)
  out = [token]
  for rng in rngs[1:]:
    token, cache = _step(params, token, cache, rng, **how)
    out.append(token)
  return np.asarray(jnp.concatenate(out))


# Compiled once per (model, sampling settings, prompt length), not per call.
_STATIC = ('model', 'temperature', 'top_k')


@functools.partial(jax.jit, static_argnames=_STATIC)
def _prefill(params, ids, rng, *, model, temperature, top_k):
  logits, cache = model.apply({'params': params}, ids, method=models.LanguageModel.prefill)
  return sample(logits[:, -1], rng, temperature=temperature, top_k=top_k), cache


@functools.partial(jax.jit, static_argnames=_STATIC)
def _step(params, token, cache, rng, *, model, temperature, top_k):
  logits, cache = model.apply({'params': params}, token, cache, method=models.LanguageModel.decode)
  return sample(logits, rng, temperature=temperature, top_k=top_k), cache


def to_text(ids) -> str:
  """Text of ids: bytes as UTF-8 (invalid: replaced), EOS as a line break, others dropped."""
  ids = np.asarray(ids)
  ends = np.flatnonzero(ids == vocab.EOS_ID)
  return '\n'.join(vocab.decode(part) for part in np.split(ids, ends))


flags.DEFINE_string('workdir', None, 'Workdir of a run of task lm (configs/lm.py).')
flags.DEFINE_string('prompt', '', 'Text to continue; empty: start from CLS alone.')
flags.DEFINE_integer('num_tokens', 200, 'Tokens (bytes or EOS) to generate.')
flags.DEFINE_float('temperature', 0.0, 'Sampling temperature; 0: greedy (argmax).')
flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely tokens; 0: all.')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    if not FLAGS.workdir:
      raise ValueError('--workdir is required: the workdir of a run of task lm.')
    model, params, step = load_model(FLAGS.workdir)
    ids = generate(model, params, FLAGS.prompt, FLAGS.num_tokens, temperature=FLAGS.temperature,
                   top_k=FLAGS.top_k, seed=FLAGS.seed)
  except ValueError as e:
    sys.exit(f'generate: {e}')
  print(f'[{FLAGS.workdir}, step {step}]', file=sys.stderr)
  print(FLAGS.prompt + to_text(ids))


if __name__ == '__main__':
  app.run(main)
