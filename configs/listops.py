r"""ListOps (Long Range Arena) classification with the paper's linear attention.

Expressions like `[MAX 2 9 [MIN 4 7 ] 0 ]` of 500 to 2000 tokens, generated in
memory (linformer_jax/classification_data.py, no download); the label is the
expression's value, 10 classes. Run:

  python train.py --config=configs/listops.py --workdir=./runs/listops

Other attentions: --config.model.attention=softmax (or linformer, elu_linear).
Not run at these defaults (hours on 2 CPU cores). benchmarks/quality.py ran it cut
to 100-500 tokens and 200 steps of batch 32: no attention got past a constant
answer (eval accuracy 29.5% softmax and Linformer, 17.8% linear and elu_linear;
benchmarks/README.md).
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'classification'      # sequence classification (linformer_jax.Classifier)
  config.seed = 0                     # parameter init, data generation and order, dropout
  config.distributed = False          # call jax.distributed.initialize() (multi-process runs)
  config.allow_changed = ''         # keys a resumed run may change, e.g. 'num_train_steps'

  # Data (linformer_jax/classification_data.py).
  config.dataset = 'listops'          # LRA ListOps, generated
  config.listops_min_len = 500        # keep expressions longer than this (LRA: 500)
  config.listops_max_len = 2000       # ... and shorter than this; also the padded length (LRA: 2000)
  config.num_train_examples = 20000   # generated training expressions
  config.num_eval_examples = 2000     # generated held-out expressions
  config.batch_size = 32              # global batch, split over all devices of all processes
  config.num_eval_batches = 16        # fixed eval set: this many batches (512 expressions)

  # Optimization: AdamW, linear warmup then linear decay to 0.
  config.num_train_steps = 2000       # total updates; the schedule ends here
  config.learning_rate = 1e-3         # peak learning rate
  config.warmup_steps = 200           # linear warmup from 0
  config.weight_decay = 0.01          # decoupled; weight matrices only
  config.grad_clip_norm = 1.0         # clip gradients to this global norm

  # Logging and checkpoints.
  config.log_every_steps = 50         # train metrics to metrics.jsonl / TensorBoard
  config.eval_every_steps = 500       # eval metrics (and always at the end)
  config.checkpoint_every_steps = 500  # save (and always at the end)
  config.keep_checkpoints = 2         # newest checkpoints kept

  # Model (linformer_jax.ModelConfig); vocabulary, classes and max_len come from the data.
  config.model = ml_collections.ConfigDict()
  config.model.attention = 'linear'   # 'linear' (the paper), 'softmax', 'linformer', 'elu_linear'
  config.model.num_layers = 2         # encoder blocks
  config.model.num_heads = 4          # attention heads
  config.model.emb_dim = 64           # model width
  config.model.mlp_dim = 128          # MLP hidden width
  config.model.dropout_rate = 0.1     # dropout on embeddings, attention and MLP outputs
  config.model.position = 'learned'  # 'learned', 'sinusoidal', 'rotary' (softmax only), 'none'
  config.model.conv_width = 0       # depthwise convolution width in every block; 0: none
  config.model.linformer_k = 128      # Linformer projected length
  config.model.linformer_sharing = 'headwise'  # Linformer projection sharing
  config.model.pooling = 'mean'       # average over real tokens (the data's CLS included)
  config.model.dtype = 'float32'      # activation dtype ('bfloat16' on accelerators)
  return config
