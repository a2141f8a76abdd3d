r"""configs/lm.py with exact causal softmax attention (O(n²); decoding keeps a KV cache).

Run: python train.py --config=configs/lm_softmax.py --workdir=./runs/lm_softmax

Not measured yet (only configs/lm.py was run to the end).
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'lm.py'))['get_config']()
  config.model.attention = 'softmax'
  return config
