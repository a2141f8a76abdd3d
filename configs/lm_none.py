r"""configs/lm.py without attention: the attention-free control (local conv and MLPs only).

Run: python train.py --config=configs/lm_none.py --workdir=./runs/lm_none

Not measured yet (only configs/lm.py was run to the end).
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.model.attention = 'none'
  return config
