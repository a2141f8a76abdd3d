r"""configs/mlm.py with the O(n²) softmax baseline.

Run: python train.py --config=configs/mlm_softmax.py --workdir=./runs/mlm_softmax

Not measured end to end: on CPU a step took about twice as long as the
linear one (n x n scores at n = 1024), so expect about twice the run time.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')
  config.model.attention = 'softmax'
  return config
