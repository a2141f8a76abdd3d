r"""configs/lm.py with exact causal softmax attention (O(n²); decoding keeps a KV cache).

Run: python train.py --config=configs/lm_softmax.py --workdir=./runs/lm_softmax

Not measured yet (only configs/lm.py was run to the end).
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.model.attention = 'softmax'
  return config
