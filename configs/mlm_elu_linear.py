r"""configs/mlm.py with elu+1 linear attention (Katharopoulos et al. 2020).

Run: python train.py --config=configs/mlm_elu_linear.py --workdir=./runs/mlm_elu_linear

Not measured end to end; the cost is linear in seq_len, like the default.
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
  config.model.attention = 'elu_linear'
  return config
