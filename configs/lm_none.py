r"""configs/lm.py without attention: the attention-free control (local conv and MLPs only).

Run: python train.py --config=configs/lm_none.py --workdir=./runs/lm_none

Not measured yet (only configs/lm.py was run to the end).
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'lm.py'))['get_config']()
  config.model.attention = 'none'
  return config
