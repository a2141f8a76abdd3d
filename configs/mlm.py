r"""Masked-LM pretraining with the paper's linear attention on the stdlib docstrings.

Run (the corpus is prepared into data_dir on first use, about a minute):

  python train.py --config=configs/mlm.py --workdir=./runs/mlm

Expected result, measured with that command on an otherwise idle 2-core CPU VM
(AMD EPYC, 2026-11-29): 4 min 46 s wall including compilation (5.5 min user +
3.3 min sys CPU), 1200 steps of 8 x 1024 bytes; eval loss in nats per masked
byte (eval accuracy) 1.433 (61.3%) at step 200, 0.990 (73.0%) at 600, 0.849
(77.3%) at 1200. Baselines logged at step 0: unigram 3.344, previous-byte bigram
2.652 (validation bytes under train-split counts). The width-5 convolution in
every block is what lets the model use its neighbours: without it (the earlier
default) eval loss plateaued at 2.87-2.91 by step 1500, near the bigram baseline. At this budget attention adds
little to it: the attention-free control (--config.model.attention=none, one
seed, measured before linformer_jax/conv.py made the convolution faster: same
function, only the wall time changed) reached 0.885 at step 1200; see benchmarks/quality.py for
the controls over seeds, and configs/recall.py for a task that needs attention. Running the command again
restores step 1200 and exits.
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
