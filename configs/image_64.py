r"""configs/image.py at 64x64: 4096 pixel tokens per image.

Run: python train.py --config=configs/image_64.py --workdir=./runs/image_64

Four times the tokens of image.py, so about four times its time per step: on
the same shared 2 CPU cores (load average ~10) the first 50 steps took 4.4 min
(compilation included), so the full 800 steps take about an hour there; not
run to the end. Use a GPU or TPU, or --config.num_train_steps.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'image.py')
  config.image_size = 64              # 64 * 64 = 4096 pixel tokens
  return config
