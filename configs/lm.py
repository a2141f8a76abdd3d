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
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')  # the same corpus and rows, unmasked
  config.task = 'lm'                  # next-byte prediction (linformer_jax.LanguageModel)
  config.seq_len = 256                # tokens per example: CLS then bytes
  config.batch_size = 16              # global batch, split over all devices of all processes
  config.num_eval_batches = 8         # fixed eval set: this many batches

  config.num_train_steps = 1000       # total updates; the schedule ends here
  config.learning_rate = 3e-3         # peak learning rate
  config.warmup_steps = 50            # linear warmup from 0
  config.log_every_steps = 50         # train metrics to metrics.jsonl / TensorBoard
  config.eval_every_steps = 250       # eval metrics (and always at the end)
  config.checkpoint_every_steps = 250  # save (and always at the end)

  config.model.causal = True          # required by the task: position i sees tokens 0..i
  config.model.conv_width = 4         # causal depthwise convolution over the last 4 tokens
  return config
