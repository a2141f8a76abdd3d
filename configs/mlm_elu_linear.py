r"""configs/mlm.py with elu+1 linear attention (Katharopoulos et al. 2020).

Run: python train.py --config=configs/mlm_elu_linear.py --workdir=./runs/mlm_elu_linear

Not measured end to end; the cost is linear in seq_len, like the default.
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'mlm.py'))['get_config']()
  config.model.attention = 'elu_linear'
  return config
