r"""configs/lm.py with the elu + 1 linear attention of Katharopoulos et al. 2020.

Run: python train.py --config=configs/lm_elu_linear.py --workdir=./runs/lm_elu_linear

Measured with that command on an otherwise idle 2-core CPU VM (AMD EPYC,
2026-11-29): 2 min 17 s wall; eval loss 1.655 at step 250, 1.506 at 500, 1.444
at 750, 1.404 at 1000 (one seed; configs/lm.py, the paper's attention: 1.382;
the control configs/lm_none.py: 1.412).
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.model.attention = 'elu_linear'
  return config
