r"""configs/mlm.py with Linformer (Wang et al. 2020): keys and values projected to length k.

Run: python train.py --config=configs/mlm_linformer.py --workdir=./runs/mlm_linformer

Not measured end to end; the projections (k = config.model.linformer_k)
keep the cost linear in seq_len, like the default.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')
  config.model.attention = 'linformer'
  return config
