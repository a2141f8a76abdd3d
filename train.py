r"""Trains a linformer_jax model: parses --config and --workdir, nothing else.

  python train.py --config=configs/mlm.py [--workdir=./runs/mlm] [--config.seq_len=512]

--workdir defaults to ./runs/<config file stem>. Everything else is in the config.
"""
import logging as py_logging
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import linformer_jax
from linformer_jax import data
from linformer_jax import trainer

config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints and metrics; default ./runs/<config stem>.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


class _QuietLibraries(py_logging.Filter):
  """Passes INFO from this repository and warnings from everyone.

  Orbax and TFDS log several INFO lines per checkpoint or read, which would
  bury the progress lines.
  """
  _ours = (os.path.dirname(os.path.abspath(linformer_jax.__file__)), os.path.abspath(__file__))

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or record.pathname.startswith(self._ours)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  data.hide_accelerators_from_tf()
  config_path = config_flags.get_config_filename(FLAGS['config'])
  stem = os.path.splitext(os.path.basename(config_path))[0]
  workdir = FLAGS.workdir or os.path.join('runs', stem)
  logging.info('Config %s, workdir %s', config_path, workdir)
  trainer.train_and_evaluate(FLAGS.config, workdir)


if __name__ == '__main__':
  app.run(main)
