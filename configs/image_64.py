r"""configs/image.py at 64x64: 4096 pixel tokens per image.

Run: python train.py --config=configs/image_64.py --workdir=./runs/image_64

Four times the tokens of image.py. Not run to the end: on an otherwise idle
2-core CPU VM (AMD EPYC, 2026-11-29) it trains at 2.7 steps/s (measured with
--config.num_train_steps=50 --config.num_train_examples=2000: 31 s wall with
compilation), so the 2000 default steps take about 13 minutes plus data
generation; its accuracy is not measured. Use a GPU or TPU for more.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'image.py')
  config.image_size = 64              # 64 * 64 = 4096 pixel tokens
  return config
