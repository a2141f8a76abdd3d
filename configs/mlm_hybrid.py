r"""configs/mlm.py as a hybrid: one softmax layer, then three of the paper's linear-attention layers.

  python train.py --config=configs/mlm_hybrid.py --workdir=./runs/mlm_hybrid

Four layers (configs/mlm.py has two) in the pattern softmax, linear, linear,
linear (ModelConfig.layer_attention), bidirectional: the one softmax layer gives
exact recall over the 1024 bytes at O(n²) for that layer only. Softmax comes
first, the placement that recalled on MQAR in benchmarks/recall.py (see
configs/lm_hybrid.py). Measured against the same four layers of one kind:
benchmarks/hybrid_configs.py.
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')
  config.model.num_layers = 4         # the pattern below, once
  config.model.layer_attention = 'softmax,linear,linear,linear'  # kind of layer i: entry i % 4
  return config
