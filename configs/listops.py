r"""ListOps (Long Range Arena) classification with the paper's linear attention.

Expressions like `[MAX 2 9 [MIN 4 7 ] 0 ]` of 500 to 2000 tokens, generated in
memory (linformer_jax/data/classification.py, no download); the label is the
expression's value, 10 classes. Run:

  python train.py --config=configs/listops.py --workdir=./runs/listops

Other attentions: --config.model.attention=softmax (or linformer, elu_linear;
'none' is the attention-free control). Not run at these defaults (LRA-length
expressions take hours on 2 CPU cores). benchmarks/quality.py runs it cut to
64-256 tokens, width 64, 300 steps of batch 32, 3 seeds (2026-11-29): the
paper's attention 35.2 ± 2.8%, softmax 36.3 ± 3.2%, Linformer 35.1 ± 2.8%,
elu_linear 29.1 ± 1.2%, the control 24.2 ± 1.6%; majority class 15%, chance
10% (README).
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'base.py')
  config.task = 'classification'      # sequence classification (linformer_jax.Classifier)

  # Data (linformer_jax/data/classification.py).
  config.dataset = 'listops'          # LRA ListOps, generated
  config.listops_min_len = 500        # keep expressions longer than this (LRA: 500)
  config.listops_max_len = 2000       # ... and shorter than this; also the padded length (LRA: 2000)
  config.num_train_examples = 20000   # generated training expressions
  config.num_eval_examples = 2000     # generated held-out expressions
  config.batch_size = 32              # global batch, split over all devices of all processes
  config.num_eval_batches = 16        # fixed eval set: this many batches (512 expressions)

  config.num_train_steps = 2000
  config.learning_rate = 1e-3
  config.warmup_steps = 200
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500

  config.model.emb_dim = 64
  config.model.mlp_dim = 128
  config.model.dropout_rate = 0.1     # 20000 expressions, seen several times
  return config
