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
linformer_jax/synthetic_data.py). For real images prepare a TFDS dataset on a
machine with network access (`tfds build cifar10 --data_dir=DIR`, or mnist)
and run with --config.dataset=cifar10 --config.data_dir=DIR; the pipeline
never downloads. cifar10 is 32x32x3 (1024 tokens of 3 features), mnist 28x28x1
(784 tokens). --config.patch_size=4 makes 4x4 patches the tokens (64 tokens).
"""
import os

import ml_collections
from ml_collections import config_dict


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'classification'      # 'mlm' or 'classification' (this)
  config.seed = 0                     # parameter init, data generation and order, dropout
  config.distributed = False          # call jax.distributed.initialize() (multi-process runs)
  config.allow_changed = ''         # keys a resumed run may change, e.g. 'num_train_steps'

  # Data (linformer_jax/classification_data.py); sequence length = (image_size / patch_size)².
  config.dataset = 'shapes'           # generated; 'cifar10' / 'mnist' when prepared in data_dir
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data (never downloaded)
  config.image_size = 32              # 'shapes' only: 32 -> 1024 pixel tokens
  config.image_channels = 1           # 'shapes' only: 1 (grey) or 3 (colour)
  config.patch_size = 1               # pixels per token side: 1 = every pixel is a token
  config.num_train_examples = 10000   # generated training set ('shapes' only); 800 x 8 = 6400 seen
  config.num_eval_examples = 512      # generated eval set ('shapes' only): all of it is evaluated
  config.batch_size = 8               # global batch, split over all devices of all processes
  config.num_eval_batches = 64        # fixed eval set: this many batches (512 images)

  # Optimization: AdamW, linear warmup then linear decay to 0.
  config.num_train_steps = 800        # total updates; the schedule ends here
  config.learning_rate = 3e-3         # peak learning rate
  config.warmup_steps = 40            # linear warmup from 0
  config.weight_decay = 0.01          # decoupled; weight matrices only
  config.grad_clip_norm = 1.0         # clip gradients to this global norm

  # Logging and checkpoints.
  config.log_every_steps = 50         # train metrics to metrics.jsonl / TensorBoard
  config.eval_every_steps = 200       # eval metrics (and always at the end)
  config.checkpoint_every_steps = 400  # save (and always at the end)
  config.keep_checkpoints = 2         # newest checkpoints kept

  # Model (linformer_jax.ModelConfig); feature_dim and num_classes come from the data.
  config.model = ml_collections.ConfigDict()
  config.model.attention = 'linear'   # 'linear' (the paper), 'softmax', 'linformer', 'elu_linear'
  config.model.num_layers = 2         # encoder blocks
  config.model.num_heads = 4          # attention heads
  config.model.emb_dim = 32           # model width
  config.model.mlp_dim = 64           # MLP hidden width
  config.model.dropout_rate = 0.0     # dropout on embeddings, attention and MLP outputs
  config.model.position = 'learned'  # 'learned', 'sinusoidal', 'rotary' (softmax only), 'none'
  config.model.conv_width = 0       # depthwise convolution width in every block; 0: none
  config.model.conv_dims = 1        # 1: along the pixel sequence, 2: over the image grid
  config.model.pooling = 'mean'       # 'mean' over tokens, or 'cls' (a prepended token)
  config.model.linformer_k = 64       # Linformer projected length
  config.model.linformer_sharing = 'headwise'  # Linformer projection sharing
  config.model.chunk_size = 64        # chunk length of causal linear kernels (unused here)
  config.model.dtype = 'float32'      # activation dtype ('bfloat16' on accelerators)
  config.model.max_len = config_dict.placeholder(int)  # position table length; None: input length
  return config
