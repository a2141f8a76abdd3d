"""Which rows a batch holds, and which files are held out (numpy only, no JAX, no TF).

Every batch is a pure function of (seed, step). A run resumed at step N therefore
sees exactly the batches an uninterrupted run sees from step N on, and each
process of a multi-host run takes its own rows of the same global batch.
"""
import zlib

import numpy as np

# One name in VALIDATION_MODULUS is held out for validation (~5%).
VALIDATION_MODULUS = 20


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


def split_by_name(name: str) -> str:
  """'validation' for ~1/VALIDATION_MODULUS of names, else 'train'.

  crc32, not Python's salted hash(): a name stays in its split across processes
  and runs, and as other names are added or removed.
  """
  held_out = zlib.crc32(name.encode('utf-8')) % VALIDATION_MODULUS == 0
  return 'validation' if held_out else 'train'
