r"""configs/recall.py in its causal form: next-token prediction, scored at each query key.

Run: python train.py --config=configs/recall_causal.py --workdir=./runs/recall_causal
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'recall.py'))['get_config']()
  config.model.causal = True
  return config
