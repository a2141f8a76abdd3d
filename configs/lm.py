r"""Causal byte-level LM with the paper's causal linear attention on the stdlib docstrings.

Run (the corpus is prepared into data_dir on first use, about a minute):

  python train.py --config=configs/lm.py --workdir=./runs/lm
  python -m linformer_jax.generate --workdir=./runs/lm --prompt='def ' --num_tokens=200

Measured with the first command on 2 CPU cores shared with other jobs (load
average 7-14 throughout, so the wall time is pessimistic): 25 min 50 s wall,
6 min 45 s of CPU (298 s user + 107 s sys), 1000 steps of 16 x 256 tokens. Eval
loss (nats per byte, 128 validation rows; the bigram baseline logged at step 0
scores 2.655, the unigram 3.345): 1.631 at step 250, 1.492 at 500, 1.382 at
1000 (eval accuracy 0.60); train loss 1.40 over steps 951-1000. The CPU time
suggests about 4-7 min on 2 idle cores (not measured). A 200-step run
(--config.num_train_steps=200) reached eval loss 1.754 in 95 s of CPU.
Greedy text repeats itself; sample with --temperature=0.8 --top_k=40. Learned
positions cap a generated sequence at max_len = seq_len = 256 tokens, prompt
included; position='sinusoidal' with a linear attention has no cap (its loss not
measured).
Override any key, e.g. --config.num_train_steps=2000 --config.model.num_layers=4.
"""
import os

import ml_collections
from ml_collections import config_dict


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'lm'                  # next-byte prediction (linformer_jax.LanguageModel)
  config.seed = 0                     # parameter init, data order and dropout
  config.distributed = False          # call jax.distributed.initialize() (multi-process runs)
  config.allow_changed = ''           # keys a resumed run may change, e.g. 'num_train_steps'

  # Data (linformer_jax/input_pipeline.py, next-byte batches): rows as for 'mlm'.
  config.dataset = 'stdlib_docs'      # embedded corpus of Python stdlib docstrings
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')  # TFDS data, prepared on first use
  config.text_files = ''              # glob of text files, for the text-files dataset
  config.seq_len = 256                # tokens per example: CLS then bytes
  config.batch_size = 16              # global batch, split over all devices of all processes
  config.num_eval_batches = 8         # fixed eval set: this many batches

  # Optimization: AdamW, linear warmup then linear decay to 0.
  config.num_train_steps = 1000       # total updates; the schedule ends here
  config.learning_rate = 3e-3         # peak learning rate
  config.warmup_steps = 50            # linear warmup from 0
  config.weight_decay = 0.01          # decoupled; weight matrices only
  config.grad_clip_norm = 1.0         # clip gradients to this global norm

  # Logging and checkpoints.
  config.log_every_steps = 50         # train metrics to metrics.jsonl / TensorBoard
  config.eval_every_steps = 250       # eval metrics (and always at the end)
  config.checkpoint_every_steps = 250  # save (and always at the end)
  config.keep_checkpoints = 2         # newest checkpoints kept

  # Model (linformer_jax.ModelConfig); vocabulary and max_len come from the data.
  config.model = ml_collections.ConfigDict()
  config.model.attention = 'linear'   # 'linear' (the paper), 'softmax', 'elu_linear', 'none'
  config.model.causal = True          # required by the task: position i sees tokens 0..i
  config.model.num_layers = 2         # blocks
  config.model.num_heads = 4          # attention heads
  config.model.emb_dim = 128          # model width
  config.model.mlp_dim = 512          # MLP hidden width
  config.model.dropout_rate = 0.0     # off: < 1 epoch, and dropout bits cost CPU time
  config.model.position = 'learned'   # 'learned', 'sinusoidal', 'rotary' (softmax only), 'none'
  config.model.conv_width = 4         # causal depthwise convolution over the last 4 tokens
  config.model.chunk_size = 64        # chunk length of the causal linear kernels
  config.model.dtype = 'float32'      # activation dtype ('bfloat16' on accelerators)
  config.model.max_len = config_dict.placeholder(int)  # position table length; None: seq_len
  return config
