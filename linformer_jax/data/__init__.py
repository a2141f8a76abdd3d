"""Input pipelines: numpy and tf.data only, no JAX.

One module per task's data (`text` for masked-LM, `classification`, `recall`),
what they share (`vocab`, `ordering`) and where data come from when nothing is
downloaded (`stdlib_corpus`, the text corpus; `generators`, the generated
images, audio and ListOps). Importing this package imports no TensorFlow.
"""
import numpy as np


def check_int(name: str, value, minimum: int) -> None:
  """ValueError unless config.<name> = `value` is an integer >= `minimum` (bools are not)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'config.{name}={value!r} must be an integer >= {minimum}')


def hide_accelerators_from_tf() -> None:
  """Keeps TensorFlow off GPUs and TPUs: tf.data only feeds the host, JAX owns the devices.

  Call before TensorFlow first touches a device; a no-op without TensorFlow, or
  when TensorFlow has already initialized its devices.
  """
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except RuntimeError:  # Devices already initialized elsewhere.
      pass
