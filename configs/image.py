r"""Image classification with every pixel a token: 32x32 -> 1024 tokens, linear attention.

Run (2 CPU cores):

  python train.py --config=configs/image.py --workdir=./runs/image

Measured with that command on 2 CPU cores shared with other jobs (load average
6-8): 13 min 56 s wall, 3 min 52 s of CPU (user + sys), data generation and
compilation included; eval accuracy 27.5% on the 512 generated eval images at
step 800 (eval loss 1.72; chance is 12.5% and ln 8 = 2.08). The CPU time
suggests 4-5 minutes on idle cores (not measured). The loss stays near ln 8
for about 200 steps, then falls; eval accuracy was 24%, 25% and 27.5% at
steps 400, 600 and 800, so more steps (or a GPU) buy more.

The default data are generated 'shapes' images (8 classes, chance 12.5%; see
linformer_jax/data/generators.py). For real images prepare a TFDS dataset on a
machine with network access (`tfds build cifar10 --data_dir=DIR`, or mnist)
and run with --config.dataset=cifar10 --config.data_dir=DIR; the pipeline
never downloads. cifar10 is 32x32x3 (1024 tokens of 3 features), mnist 28x28x1
(784 tokens). --config.patch_size=4 makes 4x4 patches the tokens (64 tokens).
"""
import os

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'base.py')
  config.task = 'classification'      # sequence classification (linformer_jax.Classifier)

  # Data (linformer_jax/data/classification.py); sequence length = (image_size / patch_size)².
  config.dataset = 'shapes'           # generated; 'cifar10' / 'mnist' when prepared in data_dir
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data (never downloaded)
  config.image_size = 32              # 'shapes' only: 32 -> 1024 pixel tokens
  config.image_channels = 1           # 'shapes' only: 1 (grey) or 3 (colour)
  config.patch_size = 1               # pixels per token side: 1 = every pixel is a token
  config.num_train_examples = 10000   # generated training set ('shapes' only); 2000 x 8 = 16000 seen
  config.num_eval_examples = 512      # generated eval set ('shapes' only): all of it is evaluated
  config.batch_size = 8               # global batch, split over all devices of all processes
  config.num_eval_batches = 64        # fixed eval set: this many batches (512 images)

  config.num_train_steps = 2000
  config.learning_rate = 3e-3
  config.warmup_steps = 100
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 1000

  config.model.emb_dim = 64
  config.model.mlp_dim = 128
  config.model.conv_width = 5         # 5x5 depthwise convolution over the pixel grid ...
  config.model.conv_dims = 2          # ... in every block (1: along the pixel sequence)
  config.model.linformer_k = 64
  return config
