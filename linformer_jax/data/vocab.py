"""The byte-level vocabulary of the text tasks (numpy only: no TensorFlow, no JAX).

Ids 0..255 are UTF-8 byte values; four special ids follow.
"""
import numpy as np

PAD_ID = 256
MASK_ID = 257
CLS_ID = 258  # Also serves as BOS: every packed row starts with it.
EOS_ID = 259  # Ends every document.
VOCAB_SIZE = 260


def encode(text: str) -> np.ndarray:
  """UTF-8 bytes of `text` as int32 token ids, [len(bytes)]."""
  return np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(np.int32)


def decode(ids) -> str:
  """Text of byte ids; special ids are skipped, invalid UTF-8 is replaced."""
  ids = np.asarray(ids).reshape(-1)
  return ids[ids < 256].astype(np.uint8).tobytes().decode('utf-8', errors='replace')
