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

import ml_collections
from ml_collections import config_dict


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'mlm'                 # 'mlm' (this) or 'classification'
  config.seed = 0                     # parameter init, data order, masking and dropout
  config.distributed = False          # call jax.distributed.initialize() (multi-process runs)
  config.allow_changed = ''         # keys a resumed run may change, e.g. 'num_train_steps'

  # Data (linformer_jax/input_pipeline.py).
  config.dataset = 'stdlib_docs'      # embedded corpus of Python stdlib docstrings
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data, prepared on first use
  config.text_files = ''              # glob of text files, for the text-files dataset
  config.seq_len = 1024               # tokens (bytes) per example
  config.mask_rate = 0.15             # fraction of tokens the model must predict (BERT)
  config.batch_size = 8               # global batch, split over all devices of all processes
  config.num_eval_batches = 4         # fixed eval set: this many batches
  config.repeat_passage = False      # each row a passage twice, only the second copy scored

  # Optimization: AdamW, linear warmup then linear decay to 0.
  config.num_train_steps = 200        # total updates; the schedule ends here
  config.learning_rate = 2e-3         # peak learning rate
  config.warmup_steps = 20            # linear warmup from 0
  config.weight_decay = 0.01          # decoupled; weight matrices only
  config.grad_clip_norm = 1.0         # clip gradients to this global norm

  # Logging and checkpoints.
  config.log_every_steps = 20         # train metrics to metrics.jsonl / TensorBoard
  config.eval_every_steps = 50        # eval metrics (and always at the end)
  config.checkpoint_every_steps = 50  # save (and always at the end)
  config.keep_checkpoints = 2         # newest checkpoints kept

  # Model (linformer_jax.ModelConfig); vocabulary and max_len come from the data.
  config.model = ml_collections.ConfigDict()
  config.model.attention = 'linear'   # 'linear' (the paper), 'softmax', 'linformer', 'elu_linear'
  config.model.num_layers = 2         # encoder blocks
  config.model.num_heads = 4          # attention heads
  config.model.emb_dim = 128          # model width
  config.model.mlp_dim = 512          # MLP hidden width
  config.model.dropout_rate = 0.0     # off: < 1 epoch, and dropout bits cost ~40% of a CPU step
  config.model.position = 'learned'  # 'learned', 'sinusoidal', 'rotary' (softmax only), 'none'
  config.model.conv_width = 0       # depthwise convolution width in every block; 0: none
  config.model.linformer_k = 128      # Linformer projected length
  config.model.linformer_sharing = 'headwise'  # Linformer projection sharing
  config.model.chunk_size = 64        # chunk length of causal linear kernels
  config.model.dtype = 'float32'      # activation dtype ('bfloat16' on accelerators)
  config.model.max_len = config_dict.placeholder(int)  # position/projection length; None: seq_len
  return config
