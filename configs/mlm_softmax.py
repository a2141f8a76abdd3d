r"""configs/mlm.py with the O(n²) softmax baseline.

Run: python train.py --config=configs/mlm_softmax.py --workdir=./runs/mlm_softmax

Not measured end to end: on CPU a step took about twice as long as the
linear one (n x n scores at n = 1024), so expect about twice the run time.
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'mlm.py'))['get_config']()
  config.model.attention = 'softmax'
  return config
