"""Training library: `train_and_evaluate` and the pure step functions it runs.

The steps run under pmap (parallel.PmapPath) or jit over a sharded Mesh
(mesh.MeshPath), as config.parallelism says; the loop only asks the layout to
place, step and fetch.

The loop reads top to bottom: task (the config checked once, the model and
data functions), data (read once to check it and to compute baselines), workdir (its stored config
compared, then locked), state (restored if there is a checkpoint), writer, data
from that step on, loop.
Every batch and every dropout key is a pure function of (config.seed, step),
so the checkpoint's step is all a resumed run needs to continue exactly where
an uninterrupted run would be.
"""
import contextlib
import functools
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from linformer_jax import checkpoints
from linformer_jax import mesh as mesh_lib
from linformer_jax import parallel
from linformer_jax import tasks
from linformer_jax import workdir as workdir_lib
from linformer_jax.metrics import MetricWriter

# Parameters that get weight decay: weight matrices. Biases and LayerNorm
# scales are left alone as usual; so are the embeddings (token, position, CLS):
# the token embedding doubles as the MLM output layer, and decoupled decay
# would shrink the rows of rarely seen bytes whether or not they are useful.
DECAYED_PARAMS = ('kernel', 'linformer_e', 'linformer_f', 'linformer_proj')

# Metrics that depend on the clock rather than the computation.
TIMING_METRICS = ('steps_per_sec', 'tokens_per_sec')


class TrainState(flax.struct.PyTreeNode):
  step: Any       # int32 scalar: updates applied so far
  params: Any
  opt_state: Any


# ----------------------------------------------------------------------------- optimizer


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup from 0 to config.learning_rate, then linear decay to 0 (BERT)."""
  warmup = config.warmup_steps
  decay = optax.linear_schedule(config.learning_rate, 0.0, max(config.num_train_steps - warmup, 1))
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), decay],
                              [warmup])


def decay_mask(params):
  """True for the parameters that get weight decay (see DECAYED_PARAMS)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in DECAYED_PARAMS, params)


def create_optimizer(config, schedule) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))


def create_state(rng, task, tx) -> TrainState:
  params = task.model.init(rng, jnp.zeros(task.input_spec.shape, task.input_spec.dtype))['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


# ----------------------------------------------------------------------------- steps


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _loss_sums(logits, targets, weights):
  """Weighted sums of cross-entropy, correct predictions and weights."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {'loss': jnp.sum(ce * weights), 'accuracy': jnp.sum(correct * weights),
          'denominator': jnp.sum(weights)}


def train_step(state, batch, rng, *, model, tx, schedule, targets, axis_name=None,
               param_shardings=None):
  """One AdamW update from this device's rows of the global batch.

  The loss is the weighted cross-entropy summed over the global batch divided
  by the global weight sum (psum over `axis_name`; None: one device, or jit
  over a mesh, where the arrays and so the sums are already global), so any
  number of devices gives the update of one device holding the whole batch.
  `rng` is folded with the step: dropout follows from (key, step) alone.
  `param_shardings` (the mesh path, jit only): the parameters' NamedShardings;
  each parameter is then gathered whole before the forward pass and its
  gradient reduced straight into its shard (FSDP's gather and reduce-scatter),
  rather than leaving XLA to split the computation around the shards.
  Returns (new state, metrics: global scalars, the same on every device).
  """
  rng = jax.random.fold_in(rng, state.step)
  labels, weights = targets(batch)
  denominator = jnp.maximum(_psum(jnp.sum(weights), axis_name), 1.0)

  def loss_fn(params):
    if param_shardings is not None:
      params = jax.tree.map(lambda p, s: jax.lax.with_sharding_constraint(
          p, jax.NamedSharding(s.mesh, jax.P())), params, param_shardings)
    logits = model.apply({'params': params}, batch['inputs'], deterministic=False,
                         rngs={'dropout': rng})
    sums = _loss_sums(logits, labels, weights)
    return sums['loss'] / denominator, sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  grads, sums = _psum((grads, sums), axis_name)
  if param_shardings is not None:
    grads = jax.lax.with_sharding_constraint(grads, param_shardings)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': sums['loss'] / denominator, 'accuracy': sums['accuracy'] / denominator,
             'denominator': sums['denominator'], 'grad_norm': optax.tree.norm(grads),
             'param_norm': optax.tree.norm(params), 'learning_rate': schedule(state.step)}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch, *, model, targets, axis_name=None):
  """Global loss/accuracy/weight sums of one eval batch (no dropout)."""
  labels, weights = targets(batch)
  logits = model.apply({'params': params}, batch['inputs'], deterministic=True)
  return _psum(_loss_sums(logits, labels, weights), axis_name)


# ----------------------------------------------------------------------------- loop helpers


def _is_due(step, every, last):
  """Whether a periodic action (log, eval, checkpoint) happens at `step`."""
  return step == last or step % every == 0


# Path settings: the shell leaves `~` alone after `--config.data_dir=`.
PATH_KEYS = ('data_dir', 'text_files')


def _expand_paths(config):
  """A copy of `config` with `~` expanded in PATH_KEYS."""
  config = config.copy_and_resolve_references()
  for name in PATH_KEYS:
    if config.get(name):
      config[name] = os.path.expanduser(config[name])
  return config


def _summarize_train(history, first_step, fetch=parallel.unreplicate):
  """Train scalars over the steps since the last summary; waits for them.

  fetch: the layout's device-to-host copy (`path.fetch`; pmap's by default).

  Loss and accuracy are weighted by each step's denominator, norms averaged,
  the learning rate that of the last step. Raises FloatingPointError at the
  first step with a non-finite loss or gradient norm.
  """
  steps = [jax.tree.map(float, fetch(m)) for m in history]
  for i, m in enumerate(steps):
    for name in ('loss', 'grad_norm'):
      if not np.isfinite(m[name]):
        raise FloatingPointError(f'non-finite {name}={m[name]} at step {first_step + i}')
  weight = sum(m['denominator'] for m in steps)
  loss = sum(m['loss'] * m['denominator'] for m in steps) / weight
  return {
      'train_loss': loss,
      'train_accuracy': sum(m['accuracy'] * m['denominator'] for m in steps) / weight,
      'train_perplexity': float(np.exp(min(loss, 100.0))),
      'grad_norm': np.mean([m['grad_norm'] for m in steps]),
      'param_norm': np.mean([m['param_norm'] for m in steps]),
      'learning_rate': steps[-1]['learning_rate'],
  }


def _evaluate(p_eval, params, eval_batches, path):
  totals = {'loss': 0.0, 'accuracy': 0.0, 'denominator': 0.0}
  for batch in eval_batches:
    sums = path.fetch(p_eval(params, path.place_batch(batch)))
    totals = {k: totals[k] + float(sums[k]) for k in totals}
  weight = max(totals['denominator'], 1.0)
  loss = totals['loss'] / weight
  return {'eval_loss': loss, 'eval_accuracy': totals['accuracy'] / weight,
          'eval_perplexity': float(np.exp(min(loss, 100.0)))}


# ----------------------------------------------------------------------------- main loop


def train_and_evaluate(config, workdir: str, *, num_devices: int | None = None,
                       stop_after_step: int | None = None) -> TrainState:
  """Trains `config.task`, evaluating, logging and checkpointing into `workdir`.

  Resumes from the latest checkpoint in workdir/checkpoints that restores; a
  finished run just reports that it is done. Every bad input (config, data, a
  config that differs from the one stored in workdir) raises ValueError before
  anything is compiled or written, leaving workdir as it was; a workdir in use
  by another run raises RuntimeError.

  Args:
    config: a config like configs/mlm.py's. `~` in data_dir and text_files is
      expanded (in a copy).
    workdir: where config.json, checkpoints/, tensorboard/ and metrics.jsonl go.
    num_devices: train on the first `num_devices` local devices (None: all);
      single-process runs only. With config.parallelism='mesh', config.mesh
      lays out these devices (all processes' devices in a multi-process run).
    stop_after_step: end this run early after that step, with a checkpoint, as
      a preemption would (the schedule still runs to config.num_train_steps).

  Returns:
    The final TrainState as host numpy arrays.
  """
  if config.distributed:
    parallel.initialize_distributed()
  config, workdir = _expand_paths(config), os.path.expanduser(workdir)
  task = tasks.create(config)  # Checks the config: the one place it is checked.
  devices = parallel.local_devices(num_devices)
  mesh = _create_mesh(config, task, devices)  # None for pmap; checks the batch splits.
  # Reads the data (cached for create_datasets): bad data stops the run here.
  baselines = task.baselines(config)
  changes = workdir_lib.check_config(workdir, config)
  workdir_lib.prepare(workdir)
  is_chief = parallel.process_index() == 0
  with workdir_lib.lock(workdir, enabled=is_chief):
    return _train(config, workdir, task, devices, mesh, baselines, changes, stop_after_step)


PARALLELISM = ('pmap', 'mesh')


def _create_mesh(config, task, devices):
  """config.mesh as a Mesh (None for config.parallelism='pmap'), once the batch splits over it."""
  parallelism = config.get('parallelism', 'pmap')
  if parallelism not in PARALLELISM:
    raise ValueError(f'unknown config.parallelism={parallelism!r}; valid: {PARALLELISM}')
  if parallelism == 'pmap':
    parallel.check_batch_size(config.batch_size, devices)
    return None
  mesh = mesh_lib.create_mesh(config.mesh, jax.devices() if parallel.process_count() > 1
                              else devices)
  mesh_lib.check_batch(mesh.shape, config.batch_size, task.input_spec.shape[1],
                       parallel.process_count())
  return mesh


def _train(config, workdir, task, devices, mesh, baselines, changes, stop_after_step):
  """train_and_evaluate once the inputs are checked and workdir is locked."""
  is_chief = parallel.process_index() == 0
  schedule = learning_rate_schedule(config)
  tx = create_optimizer(config, schedule)
  # The key is an argument, not a constant baked into a zero-argument jit: XLA
  # would constant-fold the whole random initialisation at compile time.
  init_rng = jax.random.PRNGKey(config.seed)
  init = functools.partial(create_state, task=task, tx=tx)
  abstract_state = jax.eval_shape(init, init_rng)
  path = (parallel.PmapPath(devices) if mesh is None else
          mesh_lib.MeshPath(mesh, task.input_spec.shape[1], abstract_state))
  last_step = config.num_train_steps
  if stop_after_step is not None:
    last_step = min(last_step, stop_after_step)
  with contextlib.ExitStack() as cleanup:  # Closes manager and writer however we leave.
    manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
    cleanup.callback(manager.close)
    state, start_step = checkpoints.restore_latest(manager, abstract_state,
                                                   shardings=path.restore_shardings())
    if is_chief:
      workdir_lib.record_config(workdir, config, changes, start_step)
    if state is None:
      state = path.init_state(init, init_rng)
    elif start_step < last_step:
      logging.info('Resuming from the checkpoint at step %d.', start_step)
    if start_step >= last_step:
      logging.info('Nothing to do: the checkpoint in %s is at step %d (run ends at step %d).',
                   manager.directory, start_step, last_step)
      return path.fetch(path.place_state(state))

    writer = MetricWriter(workdir, enabled=is_chief)
    cleanup.callback(writer.close)
    if start_step == 0:
      writer.truncate(-1)  # Whatever is there comes from a run that saved no checkpoint.
      writer.write(0, baselines)  # The console line shows them too.
    else:
      writer.truncate(start_step)  # Keeps the baselines, at step 0.
      logging.info('Baselines: %s', ', '.join(f'{k} {v:.4g}' for k, v in baselines.items()))
    train_iter, eval_batches = task.create_datasets(
        config, start_step=start_step, process_index=parallel.process_index(),
        process_count=parallel.process_count())
    p_train = path.train_step(functools.partial(
        train_step, model=task.model, tx=tx, schedule=schedule, targets=task.targets))
    p_eval = path.eval_step(functools.partial(eval_step, model=task.model, targets=task.targets))
    rng = path.place_rng(jax.random.PRNGKey(config.seed))
    pstate = path.place_state(state)
    tokens_per_step = config.batch_size * task.input_spec.shape[1]

    logging.info('Training steps %d..%d of %d on %d devices (%d processes, %s).', start_step + 1,
                 last_step, config.num_train_steps, path.num_devices, parallel.process_count(),
                 'pmap' if mesh is None else f'mesh {dict(mesh.shape)}')
    history = []  # Per-step metrics (on device) since the last summary.
    timer = (time.time(), start_step)
    try:
      for step in range(start_step + 1, last_step + 1):  # step: updates done after this one
        pstate, metrics = p_train(pstate, path.place_batch(next(train_iter)), rng)
        history.append(metrics)
        if step == start_step + 1:
          jax.block_until_ready(metrics)
          timer = (time.time(), step)  # Compilation is not throughput.
        save = _is_due(step, config.checkpoint_every_steps, last_step)
        scalars = {}
        # Summaries also close at every checkpoint: a run resumed there then
        # averages over the same windows as one never stopped, and no
        # non-finite state is saved unnoticed.
        if save or _is_due(step, config.log_every_steps, last_step):
          scalars.update(_summarize_train(history, step - len(history) + 1, path.fetch))
          history = []
          seconds, steps = time.time() - timer[0], step - timer[1]
          if steps:
            scalars.update(steps_per_sec=steps / seconds,
                           tokens_per_sec=steps * tokens_per_step / seconds)
          timer = (time.time(), step)
        if eval_batches and _is_due(step, config.eval_every_steps, config.num_train_steps):
          scalars.update(_evaluate(p_eval, pstate.params, eval_batches, path))
          timer = (time.time(), step)  # Nor is evaluation.
        if scalars:
          writer.write(step, scalars)
        if save:
          checkpoints.save(manager, step, path.checkpointable(pstate))
    except FloatingPointError as e:
      manager.wait_until_finished()
      raise FloatingPointError(f'{e}; stopping. The last good checkpoint (step '
                               f'{manager.latest_step()}) in {manager.directory} is intact.') from e
  return path.fetch(pstate)
