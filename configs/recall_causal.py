r"""configs/recall.py in its causal form: next-token prediction, scored at each query key.

Run: python train.py --config=configs/recall_causal.py --workdir=./runs/recall_causal

Measured with softmax attention (--config.model.attention=softmax
--config.num_train_steps=1000) on 2 CPU cores shared with other jobs (load
6-9): eval accuracy 16.5% at step 250, 91.5% at 500, 99.98% at 1000; 11.7 min
wall (6.5 min CPU). At seq_len 32 with 4 pairs it reached 98.9% by step 250.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'recall.py')
  config.model.causal = True
  return config
