r"""configs/lm.py with attention='none'.

Run: python train.py --config=configs/lm_none.py --workdir=./runs/lm_none
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'lm.py'))['get_config']()
  config.model.attention = 'none'
  return config
