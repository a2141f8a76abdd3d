"""linformer_jax: linear-complexity attention for JAX and Flax.

Kernels (pure jnp) and Flax modules. Importing this package needs only jax and
flax; the training stack lives in linformer_jax.train and friends.
"""
from linformer_jax.attention import (DECODE_KINDS, KINDS, attend, causal_state, decode_init,
                                     decode_step, elu_linear_attention, flax_attention_fn,
                                     linear_attention, linformer_attention, softmax_attention)
from linformer_jax.layers import (Classifier, Encoder, EncoderBlock, LanguageModel, MLMModel,
                                  MultiHeadAttention, context_limit)
from linformer_jax.model_config import ModelConfig, tiny

__version__ = '0.1.0'
