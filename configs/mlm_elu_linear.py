r"""configs/mlm.py with elu+1 linear attention (Katharopoulos et al. 2020).

Run: python train.py --config=configs/mlm_elu_linear.py --workdir=./runs/mlm_elu_linear

Not measured end to end; the cost is linear in seq_len, like the default.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')
  config.model.attention = 'elu_linear'
  return config
