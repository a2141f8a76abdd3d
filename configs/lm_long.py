r"""configs/lm.py at 131072 tokens a row, each row split over 8 devices (context parallelism).

  python train.py --config=configs/lm_long.py --workdir=./runs/lm_long

The trainer's mesh path (config.parallelism = 'mesh') jits the step over a
mesh data 1 x fsdp 1 x sequence P, P = every device (8 on an 8-device
machine; -1 in config.mesh: the devices the other axes leave), so each device
holds n / P = 16384 consecutive tokens of every row. Under that mesh the layers
split themselves (linformer_jax/sequence_sharding.py): the causal linear
attention exchanges fixed-size states between devices and the width-4
convolution its 3 boundary tokens, so communication per layer does not depend
on n. Sinusoidal positions: no position table to grow with n (and no cap on
generated length). seq_len must be a multiple of P. Per-device memory of the
compiled step against the unsharded one: benchmarks/sequence_memory.py.
The embedded stdlib corpus holds only ~21 training rows and ~1 validation row
(wrapped around) of this length: point dataset='text_files' at a larger corpus
for a real run. Run for 30 steps on 8 host devices faked on a 2-core CPU VM
(Intel Xeon, idle, 2026-12-06: XLA_FLAGS=--xla_force_host_platform_device_count=8
and --config.num_train_steps=30 --config.warmup_steps=5 --config.log_every_steps=5
--config.eval_every_steps=10): 10.3 s a step, 5 min 35 s wall, peak RSS 13.1
GiB; eval loss 3.434 / 3.363 / 3.352 at steps 10 / 20 / 30 (unigram 3.345,
bigram 2.652): it trains; what it reaches is not measured.
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.seq_len = 131072             # tokens per example: CLS then bytes
  config.batch_size = 2               # global batch: rows, each split over the sequence axis
  config.num_eval_batches = 1         # fixed eval set: this many batches
  config.parallelism = 'mesh'         # jit over a jax.sharding.Mesh (not pmap)
  config.mesh = 'data:1,fsdp:1,sequence:-1'  # every device on the sequence axis
  config.model.position = 'sinusoidal'  # no table that grows with n
  return config
