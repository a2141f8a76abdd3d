r"""Masked-LM pretraining with the paper's linear attention on the stdlib docstrings.

Run (the corpus is prepared into data_dir on first use, about a minute):

  python train.py --config=configs/mlm.py --workdir=./runs/mlm

Expected result, measured on 2 CPU cores shared with other jobs (load ~7):
10.5 min wall (6.3 min of CPU), about 2.6 s per step; train loss (masked
bytes, nats) from 5.56 = ln(260) at init to 4.24 averaged over steps 1-20 and
3.05 over steps 181-200; eval loss 3.13 at step 50, 2.91 at step 200 (eval
accuracy 0.25). Running the command again restores step 200 and exits.
Override any key, e.g. --config.num_train_steps=1000 --config.model.num_layers=4.
"""
import os

from ml_collections import config_dict

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'base.py')
  config.task = 'mlm'                 # masked-LM (linformer_jax.MLMModel)

  # Data (linformer_jax/data/text.py).
  config.dataset = 'stdlib_docs'      # embedded corpus of Python stdlib docstrings
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data, prepared on first use
  config.text_files = ''              # glob of text files, for the text-files dataset
  config.text_key = 'text'            # the TFDS feature holding the text
  config.seq_len = 1024               # tokens (bytes) per example
  config.mask_rate = 0.15             # fraction of tokens the model must predict (BERT)
  config.batch_size = 8               # global batch, split over all devices of all processes
  config.num_eval_batches = 4         # fixed eval set: this many batches
  config.repeat_passage = False       # each row a passage twice, only the second copy scored
  # Cap on training rows (the start of the train split); None: 64M tokens' worth.
  config.max_train_sequences = config_dict.placeholder(int)

  config.num_train_steps = 1200
  config.warmup_steps = 60
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 400

  config.model.conv_width = 5         # depthwise convolution over 5 neighbouring bytes, every block
  return config
