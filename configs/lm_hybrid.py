r"""configs/lm.py as a hybrid: three causal linear-attention layers, then one softmax layer.

  python train.py --config=configs/lm_hybrid.py --workdir=./runs/lm_hybrid

Four layers (configs/lm.py has two) in the pattern linear, linear, linear,
softmax (ModelConfig.layer_attention): the linear layers keep decoding at
O(d·d_v) per token and the one softmax layer adds exact recall over the context,
at the cost of a KV cache of max_len = seq_len slots when generating. Not yet
measured: no loss, time or comparison with configs/lm.py is claimed here.
"""
from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'lm.py')
  config.model.num_layers = 4         # the pattern below, once
  config.model.layer_attention = 'linear,linear,linear,softmax'  # kind of layer i: entry i % 4
  return config
