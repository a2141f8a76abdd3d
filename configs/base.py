r"""What every config shares: seed, processes, device layout, resume policy, optimizer, logging, model.

Not a run by itself (it names no task or data): each config starts from
`base.get_config()` and sets the keys that differ. Loaded by path, like every
config: `config_lib.sibling(__file__, 'base.py')`.
"""
import dataclasses

import ml_collections
from ml_collections import config_dict

from linformer_jax import model_config


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0                     # parameter init, data order and generation, masking, dropout
  config.distributed = False          # call jax.distributed.initialize() (multi-process runs)
  config.allow_changed = ''           # keys a resumed run may change, e.g. 'num_train_steps'
  config.parallelism = 'pmap'         # 'pmap' (data parallel) or 'mesh' (jit over config.mesh)
  config.mesh = 'data:-1,fsdp:1,sequence:1'  # 'mesh' layout: axis:size, -1 = the other devices

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

  # Model: linformer_jax.ModelConfig's fields (each explained there) at its
  # defaults, but for those below; the data decide model_config.DATA_FIELDS.
  defaults = {f.name: f.default for f in dataclasses.fields(model_config.ModelConfig)
              if f.name not in model_config.DATA_FIELDS}
  config.model = ml_collections.ConfigDict(defaults)
  config.model.num_layers = 2         # small enough for a CPU run
  config.model.emb_dim = 128
  config.model.mlp_dim = 512
  config.model.dropout_rate = 0.0     # off: < 1 epoch, and dropout bits cost ~40% of a CPU step
  config.model.linformer_k = 128      # Linformer projected length
  # Position table and Linformer projection length; None: the input length.
  config.model.max_len = config_dict.placeholder(int)
  return config
