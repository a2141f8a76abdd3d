r"""Audio classification on raw 16 kHz waveforms: 8000 samples -> 4000 tokens, linear attention.

Run (2 CPU cores):

  python train.py --config=configs/audio.py --workdir=./runs/audio

Measured with that command on 2 CPU cores shared with other jobs (load average
7-10): 20 min 35 s wall, 5 min 49 s of CPU (user + sys), data generation and
compilation included; eval accuracy 43.4% on the 512 generated eval clips at
step 300 (eval loss 1.27; chance is 12.5% and ln 8 = 2.08), already 41.6% at
step 100. The CPU time suggests about 6 minutes on idle cores (not measured).

The default data are generated 'tones' (8 sound-event classes, chance 12.5%; see
linformer_jax/synthetic_data.py). For speech, prepare TFDS speech_commands on a
machine with network access (`tfds build speech_commands --data_dir=DIR`) and
run with --config.dataset=speech_commands --config.data_dir=DIR (12 classes;
clips are centre-cropped or zero-padded to num_samples; 16000 for the whole
second). The pipeline never downloads.
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

  # Data (linformer_jax/classification_data.py); sequence length = num_samples / frame_size.
  config.dataset = 'tones'            # generated sound events; 'speech_commands' when prepared
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data (never downloaded)
  config.num_samples = 8000           # samples per clip at 16 kHz (0.5 s)
  config.frame_size = 2               # consecutive samples per token: 8000 / 2 = 4000 tokens
  config.num_train_examples = 4000    # generated training set ('tones' only); 300 x 8 = 2400 seen
  config.num_eval_examples = 512      # generated eval set ('tones' only): all of it is evaluated
  config.batch_size = 8               # global batch, split over all devices of all processes
  config.num_eval_batches = 64        # fixed eval set: this many batches (512 clips)

  # Optimization: AdamW, linear warmup then linear decay to 0.
  config.num_train_steps = 300        # total updates; the schedule ends here
  config.learning_rate = 3e-3         # peak learning rate
  config.warmup_steps = 30            # linear warmup from 0
  config.weight_decay = 0.01          # decoupled; weight matrices only
  config.grad_clip_norm = 1.0         # clip gradients to this global norm

  # Logging and checkpoints.
  config.log_every_steps = 25         # train metrics to metrics.jsonl / TensorBoard
  config.eval_every_steps = 100       # eval metrics (and always at the end)
  config.checkpoint_every_steps = 100  # save (and always at the end)
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
  config.model.pooling = 'mean'       # 'mean' over tokens, or 'cls' (a prepended token)
  config.model.linformer_k = 64       # Linformer projected length
  config.model.linformer_sharing = 'headwise'  # Linformer projection sharing
  config.model.chunk_size = 64        # chunk length of causal linear kernels (unused here)
  config.model.dtype = 'float32'      # activation dtype ('bfloat16' on accelerators)
  config.model.max_len = config_dict.placeholder(int)  # position table length; None: input length
  return config
