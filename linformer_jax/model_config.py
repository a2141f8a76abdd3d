"""Model hyperparameters: one frozen dataclass, validated on construction."""
import dataclasses
import functools

import jax.numpy as jnp
from jax import lax

from linformer_jax import attention
from linformer_jax.attention import KINDS

# The kernels by name; 'none' is the attention-free control: the same blocks
# with the attention branch removed.
ATTENTIONS = KINDS + ('none',)
POSITIONS = ('learned', 'sinusoidal', 'rotary', 'none')
# The kinds that keep rotary's relative-position property through their kernel.
ROTARY_KINDS = tuple(name for name, kind in attention.TABLE.items() if kind.supports_rotary)
LINFORMER_SHARING = ('none', 'headwise', 'key-value', 'layerwise')
POOLINGS = ('mean', 'cls')
# Compute dtypes. float16 would need loss scaling, which the trainer does not do.
DTYPES = ('float32', 'bfloat16')
PARAM_DTYPES = ('float32', 'bfloat16')
# Matmul precision: 'default' is the backend's (TF32 for float32 on GPUs, bf16
# passes on TPUs, full float32 on CPU); 'high' and 'highest' as lax.Precision.
PRECISIONS = {'default': None, 'high': lax.Precision.HIGH, 'highest': lax.Precision.HIGHEST}
# Fields the data decide (tasks.build_model_config sets them), not config.model.
DATA_FIELDS = ('vocab_size', 'feature_dim', 'pad_id', 'num_classes', 'grid_width')


def _check(ok, msg):
  if not ok:
    raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of the encoder and its heads.

  Token inputs use `vocab_size` (> 0) and `pad_id`; float inputs (image patches,
  audio frames) set `feature_dim` (> 0) and are embedded by a Dense layer.

  Hybrid models: `layer_attention` = 'linear,linear,linear,softmax' gives layer
  i the kind pattern[i % len(pattern)] (any of ATTENTIONS, 'none' included);
  `attention` is then unused. Each layer is built from `layer_config(i)`, this
  config with that one kind, and every field applies to every layer where its
  kind reads it (`implementation` must suit each kind, `window` is each window
  layer's, Linformer's 'layerwise' E = F is one matrix for all its linformer
  layers). Positions: learned and sinusoidal are added once, at the embedding,
  whatever the kinds; 'rotary' rotates queries and keys in the layers whose kind
  supports it (Kind.supports_rotary) and leaves the others unrotated, so at
  least one layer must be of such a kind.
  """
  vocab_size: int = 260           # token ids in [0, vocab_size); 0 for float inputs
  feature_dim: int = 0            # width of float input features; 0 for token inputs
  pad_id: int | None = 256        # token id of padding (masked out of attention); None: no padding
  max_len: int = 1024             # longest input: size of position table and Linformer projections
  attention: str = 'linear'       # one of ATTENTIONS (every layer's, unless layer_attention is set)
  layer_attention: str = ''       # hybrid: per-layer kinds, e.g. 'linear,softmax', repeated over the layers
  num_layers: int = 4             # encoder blocks
  num_heads: int = 4              # attention heads
  emb_dim: int = 256              # model width; head_dim = emb_dim // num_heads
  mlp_dim: int = 1024             # hidden width of each block's MLP
  dropout_rate: float = 0.1       # dropout on embeddings, attention and MLP outputs
  position: str = 'learned'       # one of POSITIONS; 'rotary' rotates queries and keys of the kinds that keep it
  conv_width: int = 0             # > 0: a depthwise convolution of this width in every block
  conv_dims: int = 1              # 1: along the sequence; 2: over the image grid (grid_width)
  grid_width: int = 0             # tokens per row when the input is an image grid; 0 otherwise
  causal: bool = False            # causal attention (not for 'linformer')
  chunk_size: int = 64            # chunk length of the causal linear kernels
  window: int = 64                # 'window' attention: keys within window - 1 positions of the query
  implementation: str = 'auto'    # the kernel's implementation ('auto': the best for the backend)
  linformer_k: int = 64           # Linformer projected length k
  linformer_sharing: str = 'headwise'  # one of LINFORMER_SHARING
  num_classes: int = 0            # > 0: classification head instead of the MLM head
  pooling: str = 'mean'           # classification pooling, one of POOLINGS
  dtype: str = 'float32'          # compute dtype, one of DTYPES: matmul operands (float32 accumulation)
  param_dtype: str = 'float32'    # parameter dtype, one of PARAM_DTYPES (the optimizer's state follows it)
  precision: str = 'default'      # matmul precision, one of PRECISIONS
  remat_attention: bool = False   # recompute each attention kernel in the backward pass (jax.checkpoint)

  def __post_init__(self):
    check = _check
    check(self.attention in ATTENTIONS, f'unknown attention {self.attention!r}; valid: {ATTENTIONS}')
    check(self.linformer_sharing in LINFORMER_SHARING,
          f'unknown linformer_sharing {self.linformer_sharing!r}; valid: {LINFORMER_SHARING}')
    check(self.pooling in POOLINGS, f'unknown pooling {self.pooling!r}; valid: {POOLINGS}')
    check(self.dtype != 'float16', "dtype='float16' needs loss scaling, which this trainer does "
          "not do; use 'bfloat16' (float32's exponent range, no scaling needed)")
    check(self.dtype in DTYPES, f'unknown dtype {self.dtype!r}; valid: {DTYPES}')
    check(self.param_dtype in PARAM_DTYPES,
          f'unknown param_dtype {self.param_dtype!r}; valid: {PARAM_DTYPES}')
    check(self.precision in PRECISIONS, f'unknown precision {self.precision!r}; valid: {tuple(PRECISIONS)}')
    check((self.vocab_size > 0) != (self.feature_dim > 0),
          f'exactly one of vocab_size ({self.vocab_size}) and feature_dim ({self.feature_dim}) must be > 0')
    check(self.emb_dim % self.num_heads == 0,
          f'emb_dim={self.emb_dim} is not divisible by num_heads={self.num_heads}')
    check(self.position in POSITIONS, f'unknown position {self.position!r}; valid: {POSITIONS}')
    check(self.position != 'rotary' or self.head_dim % 2 == 0,
          f"position='rotary' needs an even head_dim, got {self.head_dim}")
    check(self.conv_width >= 0, f'conv_width must be >= 0 (0: no convolution), got {self.conv_width}')
    check(self.conv_dims in (1, 2), f'conv_dims must be 1 or 2, got {self.conv_dims}')
    check(self.conv_dims == 1 or self.grid_width > 0,
          'conv_dims=2 needs image inputs (grid_width > 0, set by the data); got grid_width=0')
    check(not (self.conv_dims == 2 and self.causal), 'conv_dims=2 has no causal form')
    for name in ('max_len', 'num_layers', 'num_heads', 'emb_dim', 'mlp_dim', 'chunk_size', 'linformer_k',
                 'window'):
      check(getattr(self, name) > 0, f'{name} must be positive, got {getattr(self, name)}')
    check(isinstance(self.remat_attention, bool),
          f'remat_attention must be True or False, got {self.remat_attention!r}')
    check(0.0 <= self.dropout_rate < 1.0, f'dropout_rate must be in [0, 1), got {self.dropout_rate}')
    if self.layer_attention:
      self._check_layers()
    else:
      self._check_kind()

  def _check_kind(self):
    """The checks that depend on the attention kind, for a single-kind config."""
    check = _check
    kind = self.kind
    if kind is not None:
      valid = kind.causal_implementations if self.causal else kind.implementations
      check(self.implementation == 'auto' or self.implementation in valid,
            f'implementation {self.implementation!r} is not one of {self.attention!r} attention\'s'
            f'{" causal" if self.causal else ""} implementations; valid: {("auto",) + tuple(valid)}')
    check(self.position != 'rotary' or self.attention in ROTARY_KINDS,
          f"position='rotary' needs attention in {ROTARY_KINDS} (got {self.attention!r}): the linear "
          "kernels' feature softmax does not keep rotary's relative-position property")
    check(not (self.causal and kind and kind.causal is None),
          f'{self.attention} attention has no causal form; causal kinds: {attention.CAUSAL_KINDS}')

  def _check_layers(self):
    """A hybrid's pattern, then each layer's config (the single-kind checks, by layer)."""
    pattern = self._pattern()
    for i, name in enumerate(pattern):
      if name not in ATTENTIONS:
        raise ValueError(f'layer_attention={self.layer_attention!r}: entry {i} {name!r} is not an '
                         f'attention kind; valid: {ATTENTIONS}')
    if len(pattern) > self.num_layers:
      raise ValueError(f'layer_attention={self.layer_attention!r} names {len(pattern)} layers but '
                       f'num_layers={self.num_layers}: the entries past layer {self.num_layers - 1} '
                       'would never be used')
    if self.position == 'rotary' and not set(pattern) & set(ROTARY_KINDS):
      raise ValueError(f"position='rotary' in a hybrid needs at least one layer of a kind in "
                       f'{ROTARY_KINDS} (the others get no rotation); layer_attention='
                       f'{self.layer_attention!r} has none')
    for i, name in enumerate(pattern):  # the first layer of each entry: later ones repeat it
      try:
        self.layer_config(i)
      except ValueError as e:
        raise ValueError(f'layer_attention={self.layer_attention!r}, layer {i} ({name!r}): {e}') from None

  def _pattern(self):
    return tuple(name.strip() for name in self.layer_attention.split(','))

  @property
  def head_dim(self):
    return self.emb_dim // self.num_heads

  @property
  def hybrid(self):
    """True when layers choose their kinds (layer_attention is set)."""
    return bool(self.layer_attention)

  @property
  def kind(self):
    """The attention kind's record (attention.TABLE), None for 'none'. A hybrid
    has no one kind: ValueError (read `layer_kinds` or `layer_config(i).kind`)."""
    if self.hybrid:
      raise ValueError(f'a hybrid (layer_attention={self.layer_attention!r}) has one attention kind '
                       'per layer: read layer_kinds or layer_config(i).kind')
    return attention.TABLE.get(self.attention)

  @property
  def layer_kinds(self):
    """The attention kind name of each layer, a tuple of num_layers names."""
    if not self.hybrid:
      return (self.attention,) * self.num_layers
    pattern = self._pattern()
    return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

  @property
  def layer_records(self):
    """The `Kind` record of each layer (None for 'none'), a tuple of num_layers."""
    return tuple(attention.TABLE.get(name) for name in self.layer_kinds)

  def layer_config(self, i):
    """The single-kind ModelConfig layer i is built from: attention = its kind, no
    layer_attention, and position 'none' in place of a 'rotary' its kind does not
    support (that layer is not rotated). The config itself when not a hybrid."""
    if not self.hybrid:
      return self
    if not 0 <= i < self.num_layers:
      raise ValueError(f'layer {i} out of range: num_layers={self.num_layers}')
    name = self.layer_kinds[i]
    position = self.position
    if position == 'rotary' and name not in ROTARY_KINDS:
      position = 'none'
    return dataclasses.replace(self, attention=name, layer_attention='', position=position)

  @property
  def kernel_implementation(self):
    """`implementation=` for the kernels: None for 'auto'."""
    return None if self.implementation == 'auto' else self.implementation

  @property
  def kernel_window(self):
    """`window=` for the kernels: `window` for a windowed kind, None (not taken) otherwise
    (a single-kind config: a hybrid's layer_config(i))."""
    return self.window if self.kind is not None and self.kind.windowed else None

  @property
  def matmul_precision(self):
    return PRECISIONS[self.precision]

  def dense_kwargs(self):
    """dtype, param_dtype, precision and a dot_general that returns float32 for
    Dense layers (linen and NNX): bf16 operands, float32 accumulation and result."""
    return dict(dtype=jnp.dtype(self.dtype), param_dtype=jnp.dtype(self.param_dtype),
                precision=self.matmul_precision,
                dot_general=functools.partial(lax.dot_general, preferred_element_type=jnp.float32))


def tiny(**overrides) -> ModelConfig:
  """A model small enough for unit tests on CPU."""
  kwargs = dict(max_len=64, num_layers=2, num_heads=2, emb_dim=16, mlp_dim=32,
                dropout_rate=0.0, chunk_size=8, linformer_k=8)
  kwargs.update(overrides)
  return ModelConfig(**kwargs)
