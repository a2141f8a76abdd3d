"""Metric writing: TensorBoard event files, workdir/metrics.jsonl and a console line.

No JAX here: values arrive as Python or numpy scalars.
"""
import json
import math
import os

from absl import logging

METRICS_FILE = 'metrics.jsonl'
# The console line shows these, and every 'baseline_*' (step 0); the files get everything.
CONSOLE_METRICS = ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy', 'learning_rate',
                   'steps_per_sec')


def read_metrics(workdir: str) -> list[dict]:
  """The JSON objects in workdir/metrics.jsonl, skipping a line torn by a kill."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


class MetricWriter:
  """Writes one record of scalars per step. Does nothing when not `enabled`.

  `metrics.jsonl` holds one JSON object per line, `{"step": s, "train_loss": ...}`,
  with every scalar written at step s (train and eval alike).
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self._workdir = workdir
    self._enabled = enabled
    self._tb = None
    if enabled:
      # tensorboard's own numpy writer: no TensorFlow (or GPU) needed.
      from tensorboard.summary import Writer
      self._tb = Writer(os.path.join(workdir, 'tensorboard'))

  def truncate(self, step: int) -> None:
    """Drops records after `step` from metrics.jsonl (all of them for step -1).

    A resumed run restarts at its checkpoint's step and writes those steps
    again; without this, the file would hold them twice (TensorBoard itself
    discards the orphaned points when it sees the step go back).
    """
    if not self._enabled:
      return
    path = os.path.join(self._workdir, METRICS_FILE)
    if not os.path.exists(path):
      return
    keep = [r for r in read_metrics(self._workdir) if r.get('step', math.inf) <= step]
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in keep)
    os.replace(tmp, path)  # Atomic: a kill now leaves the old or the new file.

  def write(self, step: int, scalars: dict) -> None:
    if not self._enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._tb.flush()
    with open(os.path.join(self._workdir, METRICS_FILE), 'a') as f:
      f.write(json.dumps({'step': int(step), **scalars}) + '\n')
    shown = [k for k in scalars if k.startswith('baseline_')] + [
        k for k in CONSOLE_METRICS if k in scalars]
    logging.info('step %d: %s', step, ', '.join(f'{k} {_fmt(scalars[k])}' for k in shown))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _fmt(value: float) -> str:
  return f'{value:.4g}' if abs(value) < 1e4 else f'{value:.0f}'
