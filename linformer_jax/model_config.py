"""Model hyperparameters: one frozen dataclass, validated on construction."""
import dataclasses

ATTENTIONS = ('softmax', 'linformer', 'linear', 'elu_linear')
LINFORMER_SHARING = ('none', 'headwise', 'key-value', 'layerwise')
POOLINGS = ('mean', 'cls')
DTYPES = ('float32', 'bfloat16', 'float16')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of the encoder and its heads.

  Token inputs use `vocab_size` (> 0) and `pad_id`; float inputs (image patches,
  audio frames) set `feature_dim` (> 0) and are embedded by a Dense layer.
  """
  vocab_size: int = 260           # token ids in [0, vocab_size); 0 for float inputs
  feature_dim: int = 0            # width of float input features; 0 for token inputs
  pad_id: int | None = 256        # token id of padding (masked out of attention); None: no padding
  max_len: int = 1024             # longest input: size of position table and Linformer projections
  attention: str = 'linear'       # one of ATTENTIONS
  num_layers: int = 4             # encoder blocks
  num_heads: int = 4              # attention heads
  emb_dim: int = 256              # model width; head_dim = emb_dim // num_heads
  mlp_dim: int = 1024             # hidden width of each block's MLP
  dropout_rate: float = 0.1       # dropout on embeddings, attention and MLP outputs
  causal: bool = False            # causal attention (not for 'linformer')
  chunk_size: int = 64            # chunk length of the causal linear kernels
  linformer_k: int = 64           # Linformer projected length k
  linformer_sharing: str = 'headwise'  # one of LINFORMER_SHARING
  num_classes: int = 0            # > 0: classification head instead of the MLM head
  pooling: str = 'mean'           # classification pooling, one of POOLINGS
  dtype: str = 'float32'          # activation dtype, one of DTYPES

  def __post_init__(self):
    def check(ok, msg):
      if not ok:
        raise ValueError(msg)
    check(self.attention in ATTENTIONS, f'unknown attention {self.attention!r}; valid: {ATTENTIONS}')
    check(self.linformer_sharing in LINFORMER_SHARING,
          f'unknown linformer_sharing {self.linformer_sharing!r}; valid: {LINFORMER_SHARING}')
    check(self.pooling in POOLINGS, f'unknown pooling {self.pooling!r}; valid: {POOLINGS}')
    check(self.dtype in DTYPES, f'unknown dtype {self.dtype!r}; valid: {DTYPES}')
    check((self.vocab_size > 0) != (self.feature_dim > 0),
          f'exactly one of vocab_size ({self.vocab_size}) and feature_dim ({self.feature_dim}) must be > 0')
    check(self.emb_dim % self.num_heads == 0,
          f'emb_dim={self.emb_dim} is not divisible by num_heads={self.num_heads}')
    for name in ('max_len', 'num_layers', 'num_heads', 'emb_dim', 'mlp_dim', 'chunk_size', 'linformer_k'):
      check(getattr(self, name) > 0, f'{name} must be positive, got {getattr(self, name)}')
    check(0.0 <= self.dropout_rate < 1.0, f'dropout_rate must be in [0, 1), got {self.dropout_rate}')
    check(not (self.causal and self.attention == 'linformer'), 'linformer attention has no causal form')

  @property
  def head_dim(self):
    return self.emb_dim // self.num_heads


def tiny(**overrides) -> ModelConfig:
  """A model small enough for unit tests on CPU."""
  kwargs = dict(max_len=64, num_layers=2, num_heads=2, emb_dim=16, mlp_dim=32,
                dropout_rate=0.0, chunk_size=8, linformer_k=8)
  kwargs.update(overrides)
  return ModelConfig(**kwargs)
