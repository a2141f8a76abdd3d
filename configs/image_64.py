r"""configs/image.py at 64x64: 4096 pixel tokens per image.

Run: python train.py --config=configs/image_64.py --workdir=./runs/image_64

Expected result: MEASURED.
"""
import importlib.util
import os


def _base_config():
  # Config files are loaded by path, not as a package: import the sibling by path.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'image.py')
  spec = importlib.util.spec_from_file_location('configs_image', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _base_config()
  config.image_size = 64              # 64 * 64 = 4096 pixel tokens
  return config
