r"""Multi-query associative recall (Zoology's MQAR), a task attention solves and pure mixing cannot.

Each row: 8 key-value pairs, then the 8 keys again in random order among noise,
each to be answered with its value (linformer_jax/data/recall.py, generated on
the fly, no download). Scored at the 8 queries per row. Run:

  python train.py --config=configs/recall.py --workdir=./runs/recall

Causal form (next-token prediction; the target at each query key is its value):
configs/recall_causal.py, or --config.model.causal=True here. Other attentions:
--config.model.attention=softmax (or linformer, elu_linear). Harder: raise
--config.num_pairs (up to seq_len / 4) or --config.seq_len.
Baselines (data/recall.py baselines): chance accuracy 1/64 = 1.6%, uniform loss
ln 64 = 4.16 nats; without recall, guessing the row's most frequent value reaches 17.2%.

Measured with softmax attention (--config.model.attention=softmax) on 2 CPU
cores shared with other jobs (load 6-9), before local mixing existed: this
bidirectional form did not learn recall. At seq_len 64, 1500 steps: eval
accuracy 16.6% from step 250 on (the no-recall 17.2%), 9.4 min wall; at
seq_len 32, 4 pairs, 16 keys and values, lr 3e-3, 2000 steps: 34.4% (no-recall
33.7%). The causal form learns (configs/recall_causal.py).
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'base.py')
  config.task = 'recall'              # MQAR (linformer_jax.MLMModel, scored at the queries)

  # Data (linformer_jax/data/recall.py).
  config.seq_len = 128                # tokens per row: 2 * num_pairs for the pairs, then queries and noise
  config.num_pairs = 8                # key-value pairs per row, each queried once
  config.key_vocab_size = 64          # key ids (distinct within a row)
  config.value_vocab_size = 64        # value ids
  config.batch_size = 64              # global batch, split over all devices of all processes
  config.num_eval_batches = 8         # fixed eval set: this many batches (512 rows, 4096 queries)

  config.num_train_steps = 2000
  config.learning_rate = 1e-3
  config.warmup_steps = 100
  config.log_every_steps = 50
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 500

  config.model.causal = False         # False: MASK at each answer; True: next-token prediction
  config.model.mlp_dim = 256
  config.model.linformer_k = 64
  config.model.chunk_size = 32        # chunk length of causal linear kernels
  return config
