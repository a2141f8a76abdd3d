r"""configs/lm.py with the elu + 1 linear attention of Katharopoulos et al. 2020.

Run: python train.py --config=configs/lm_elu_linear.py --workdir=./runs/lm_elu_linear

Not measured yet (only configs/lm.py was run to the end).
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.model.attention = 'elu_linear'
  return config
