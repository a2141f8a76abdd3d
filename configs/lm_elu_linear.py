r"""configs/lm.py with the elu + 1 linear attention of Katharopoulos et al. 2020.

Run: python train.py --config=configs/lm_elu_linear.py --workdir=./runs/lm_elu_linear

Not measured yet (only configs/lm.py was run to the end).
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'lm.py'))['get_config']()
  config.model.attention = 'elu_linear'
  return config
