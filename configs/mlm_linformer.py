r"""configs/mlm.py with Linformer (Wang et al. 2020): keys and values projected to length k.

Run: python train.py --config=configs/mlm_linformer.py --workdir=./runs/mlm_linformer

Not measured end to end; the projections (k = config.model.linformer_k)
keep the cost linear in seq_len, like the default.
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
  config.model.attention = 'linformer'
  return config
