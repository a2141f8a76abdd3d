r"""Multi-query associative recall (Zoology's MQAR), a task attention solves and local mixing cannot.

Each row: 8 key-value pairs, then the 8 keys again in random order among noise
(64 tokens), each to be answered with its value (linformer_jax/data/recall.py,
generated on the fly, no download). Scored at the 8 queries per row. Run:

  python train.py --config=configs/recall.py --workdir=./runs/recall

Causal form (next-token prediction; the target at each query key is its value):
configs/recall_causal.py, or --config.model.causal=True here. Other attentions:
--config.model.attention=softmax (or linformer, elu_linear; 'none' is the
attention-free control). Harder: raise --config.num_pairs (up to seq_len / 4)
or --config.seq_len; smaller models (emb_dim 64) need more steps.
Baselines (data/recall.py baselines): chance accuracy 1/16 = 6.2%, uniform loss
ln 16 = 2.77 nats; without recall, guessing the row's most frequent value
reaches 25.8%.

Measured with that command (the paper's linear attention) on an otherwise idle
2-core CPU VM (AMD EPYC, 2026-11-29; conv_width 3 in every block, without which
softmax did not learn this bidirectional form at the earlier defaults): 1 min
6 s wall, eval
accuracy 51.4% at step 100, 99.1% at 200, 99.98% at step 600 (eval loss
0.0012). benchmarks/quality.py runs the other kinds and the control over seeds,
and against width and number of pairs (README).
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'base.py')
  config.task = 'recall'              # MQAR (linformer_jax.MLMModel, scored at the queries)

  # Data (linformer_jax/data/recall.py).
  config.seq_len = 64                 # tokens per row: 2 * num_pairs for the pairs, then queries and noise
  config.num_pairs = 8                # key-value pairs per row, each queried once
  config.key_vocab_size = 32          # key ids (distinct within a row)
  config.value_vocab_size = 16        # value ids
  config.batch_size = 64              # global batch, split over all devices of all processes
  config.num_eval_batches = 8         # fixed eval set: this many batches (512 rows, 4096 queries)

  config.num_train_steps = 600
  config.learning_rate = 3e-3
  config.warmup_steps = 30
  config.log_every_steps = 50
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 300

  config.model.causal = False         # False: MASK at each answer; True: next-token prediction
  config.model.mlp_dim = 256
  config.model.conv_width = 3         # depthwise convolution width in every block; 0: none
  config.model.linformer_k = 64
  config.model.chunk_size = 32        # chunk length of causal linear kernels
  return config
