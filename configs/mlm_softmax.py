r"""configs/mlm.py with the O(n²) softmax baseline.

Run: python train.py --config=configs/mlm_softmax.py --workdir=./runs/mlm_softmax

Not measured end to end: on CPU a step took about twice as long as the
linear one (n x n scores at n = 1024), so expect about twice the run time.
"""
import importlib.util
import os


def _base_config():
  # Config files are loaded by path, not as a package: import the sibling by path.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mlm.py')
  spec = importlib.util.spec_from_file_location('configs_mlm', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _base_config()
  config.model.attention = 'softmax'
  return config
