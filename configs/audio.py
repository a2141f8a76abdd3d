r"""Audio classification on raw 16 kHz waveforms: 8000 samples -> 4000 tokens, linear attention.

Run (2 CPU cores):

  python train.py --config=configs/audio.py --workdir=./runs/audio

Measured with that command on 2 CPU cores shared with other jobs (load average
7-10): 20 min 35 s wall, 5 min 49 s of CPU (user + sys), data generation and
compilation included; eval accuracy 43.4% on the 512 generated eval clips at
step 300 (eval loss 1.27; chance is 12.5% and ln 8 = 2.08), already 41.6% at
step 100. The CPU time suggests about 6 minutes on idle cores (not measured).

The default data are generated 'tones' (8 sound-event classes, chance 12.5%; see
linformer_jax/data/generators.py). For speech, prepare TFDS speech_commands on a
machine with network access (`tfds build speech_commands --data_dir=DIR`) and
run with --config.dataset=speech_commands --config.data_dir=DIR (12 classes;
clips are centre-cropped or zero-padded to num_samples; 16000 for the whole
second). The pipeline never downloads.
"""
import os

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'base.py')
  config.task = 'classification'      # sequence classification (linformer_jax.Classifier)

  # Data (linformer_jax/data/classification.py); sequence length = num_samples / frame_size.
  config.dataset = 'tones'            # generated sound events; 'speech_commands' when prepared
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data (never downloaded)
  config.num_samples = 8000           # samples per clip at 16 kHz (0.5 s)
  config.frame_size = 2               # consecutive samples per token: 8000 / 2 = 4000 tokens
  config.num_train_examples = 4000    # generated training set ('tones' only); 600 x 8 = 4800 seen
  config.num_eval_examples = 512      # generated eval set ('tones' only): all of it is evaluated
  config.batch_size = 8               # global batch, split over all devices of all processes
  config.num_eval_batches = 64        # fixed eval set: this many batches (512 clips)

  config.num_train_steps = 600
  config.learning_rate = 3e-3
  config.warmup_steps = 60
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 300

  config.model.emb_dim = 64
  config.model.mlp_dim = 128
  config.model.conv_width = 31        # depthwise conv over 31 tokens (62 samples): a learned filterbank
  config.model.linformer_k = 64
  return config
