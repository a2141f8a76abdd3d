r"""configs/image.py at 64x64: 4096 pixel tokens per image.

Run: python train.py --config=configs/image_64.py --workdir=./runs/image_64

Four times the tokens of image.py, so about four times its time per step: on
the same shared 2 CPU cores (load average ~10) the first 50 steps took 4.4 min
(compilation included), so the full 800 steps take about an hour there; not
run to the end. Use a GPU or TPU, or --config.num_train_steps.
"""
import os
import runpy


def get_config():
  # Config files are loaded by path, not as a package: run the sibling by path.
  config = runpy.run_path(os.path.join(os.path.dirname(__file__), 'image.py'))['get_config']()
  config.image_size = 64              # 64 * 64 = 4096 pixel tokens
  return config
