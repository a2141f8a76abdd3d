"""linformer_jax: linear-complexity attention for JAX and Flax.

Kernels (pure jnp), Flax layers and models. Importing this package needs only
jax and flax; the training stack (linformer_jax.trainer, .tasks, .data, ...)
needs the `[train]` extra.
"""
from linformer_jax.attention import (CAUSAL_KINDS, DECODE_KINDS, KINDS, TABLE, Kind, attend,
                                     attend_sharded, causal_state, decode_init, decode_step, elu_linear_attention,
                                     flax_attention_fn, linear_attention, linear_window_attention,
                                     linformer_attention,
                                     softmax_attention, window_attention)
from linformer_jax.layers import Encoder, EncoderBlock, LocalMixing, MultiHeadAttention
from linformer_jax.model_config import ModelConfig, tiny
from linformer_jax.models import Classifier, Embedder, LanguageModel, MLMModel, context_limit

__version__ = '0.1.0'
