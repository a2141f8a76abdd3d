"""Deterministic, random-access batch order (numpy only, no JAX, no TF).

Every batch is a pure function of (seed, step). A run resumed at step N therefore
sees exactly the batches an uninterrupted run sees from step N on, and each
process of a multi-host run takes its own rows of the same global batch.
"""
import numpy as np


def global_batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
  """Example indices of the global batch at `step`: [batch_size] int64.

  Examples are visited in a fresh permutation each epoch (seeded by seed and
  epoch); a batch that straddles two epochs takes the tail of one and the head
  of the next, so no example repeats within an epoch.
  """
  if num_examples <= 0:
    raise ValueError(f'num_examples must be positive, got {num_examples}')
  start = step * batch_size
  positions = np.arange(start, start + batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(batch_size, dtype=np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    sel = epochs == epoch
    out[sel] = perm[offsets[sel]]
  return out


def process_slice(batch_size: int, process_index: int, process_count: int) -> slice:
  """Rows of a global batch that belong to one process."""
  if batch_size % process_count:
    raise ValueError(f'global batch_size={batch_size} is not divisible by process_count={process_count}')
  per_process = batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)
