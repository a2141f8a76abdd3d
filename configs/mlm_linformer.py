r"""configs/mlm.py with Linformer (Wang et al. 2020): keys and values projected to length k.

Run: python train.py --config=configs/mlm_linformer.py --workdir=./runs/mlm_linformer

Not measured end to end; the projections (k = config.model.linformer_k)
keep the cost linear in seq_len, like the default.
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'mlm.py'))['get_config']()
  config.model.attention = 'linformer'
  return config
