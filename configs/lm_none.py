r"""configs/lm.py without attention: the attention-free control (local conv and MLPs only).

Run: python train.py --config=configs/lm_none.py --workdir=./runs/lm_none

Measured with that command on an otherwise idle 2-core CPU VM (AMD EPYC,
2026-11-29): 1 min 24 s wall; eval loss 1.635 at step 250, 1.512 at 500, 1.447
at 750, 1.412 at 1000 (configs/lm.py: 1.382).
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.model.attention = 'none'
  return config
