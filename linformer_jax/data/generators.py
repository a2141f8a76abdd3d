"""Generated classification data, numpy only (no JAX, no TF), nothing downloaded.

Three generators, each a pure function of (size, seed, shape arguments):

- `shapes`: images of one geometric shape (8 classes) at a random position and
  scale, on a random background with clutter and noise.
- `tones`: 16 kHz waveforms of one sound event (8 classes) at a random onset in
  background noise.
- `listops`: ListOps expressions exactly as in Long Range Arena (Tay et al.
  2021; Nangia & Bowman 2018), tokenized with `LISTOPS_VOCAB`.

Image and audio labels are balanced (counts differ by at most one); ListOps
labels follow LRA's own, unbalanced distribution (about 17% each for 0 and 9,
7-10% for the others). `seed` is anything np.random.default_rng accepts.
"""
import functools

import numpy as np

SHAPES_CLASSES = ('disk', 'ring', 'square', 'frame', 'triangle', 'plus', 'bars', 'diagonal')
TONES_CLASSES = ('tone', 'chirp_up', 'chirp_down', 'am_tone', 'fm_tone', 'noise_burst', 'chord',
                 'clicks')
SAMPLE_RATE = 16000

# ListOps vocabulary: id = index. Digits are ids 2..11.
LISTOPS_VOCAB = ('<pad>', '<cls>', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '[MAX',
                 '[MIN', '[MED', '[SM', ']')
LISTOPS_VOCAB_SIZE = len(LISTOPS_VOCAB)
PAD_ID = 0
CLS_ID = 1
DIGIT_IDS = tuple(range(2, 12))
MAX_ID, MIN_ID, MED_ID, SM_ID, END_ID = 12, 13, 14, 15, 16
LISTOPS_OPERATOR_IDS = (MAX_ID, MIN_ID, MED_ID, SM_ID)
LISTOPS_NUM_CLASSES = 10

# Rendering works on chunks of examples so that 64x64 images or long waveforms
# never need [n, H, W] float64 temporaries for the whole set. Fixed, because the
# random stream depends on it.
_CHUNK = 512


def _balanced_labels(rng, num_examples, num_classes):
  """Labels with per-class counts differing by at most one, in random order."""
  return rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)


def _class_chunks(labels):
  """Yields (label, indices) covering every example, grouped by class, in chunks.

  Chunks bound the [chunk, H, W] / [chunk, T] temporaries; grouping by class
  lets each chunk render one class without masking.
  """
  for label in range(int(labels.max(initial=-1)) + 1):
    idx = np.flatnonzero(labels == label)
    for start in range(0, len(idx), _CHUNK):
      yield label, idx[start:start + _CHUNK]


# ----------------------------------------------------------------------------- shapes


def _shape_masks(label, dx, dy, size, width, variant):
  """Boolean masks [n, H, W] of shape `label`, centred at dx = dy = 0.

  dx [n, 1, W], dy [n, H, 1]: pixel offsets from each shape's centre; size
  (half extent), width (stroke) and variant (orientation flip, 0/1): [n, 1, 1].
  """
  name = SHAPES_CLASSES[label]
  half = width / 2
  r = np.hypot(dx, dy)
  box = np.maximum(np.abs(dx), np.abs(dy))
  if name == 'disk':
    return r <= size
  if name == 'ring':
    return np.abs(r - (size - half)) <= half
  if name == 'square':
    return box <= 0.85 * size
  if name == 'frame':
    return np.abs(box - (size - half)) <= half
  if name == 'triangle':
    dy = np.where(variant == 1, -dy, dy)  # Pointing up or down.
    return (dy <= size) & (np.abs(dx) <= (dy + size) / 2)
  if name == 'plus':
    return (((np.abs(dx) <= half) & (np.abs(dy) <= size)) |
            ((np.abs(dy) <= half) & (np.abs(dx) <= size)))
  if name == 'bars':
    return (np.abs(dx) <= size) & (np.abs(np.abs(dy) - size / 2) <= half)
  if name == 'diagonal':
    sign = np.where(variant == 1, -1.0, 1.0)  # '\' or '/'.
    across = np.abs(dx - sign * dy) / np.sqrt(2)
    along = np.abs(dx + sign * dy) / np.sqrt(2)
    return (across <= half) & (along <= size * np.sqrt(2))
  raise ValueError(f'unknown shape class {label}')


def _render_shapes(rng, labels, image_size, channels):
  """Images [n, S, S, C] float32 in [0, 1] for `labels` [n]."""
  n, s = len(labels), image_size
  # Scale with the image, so 32 and 64 pixel sets look alike.
  size = rng.uniform(0.15, 0.3, n) * s
  width = np.maximum(1.5, rng.uniform(0.2, 0.35, n) * size)
  cx = rng.uniform(size, s - size)
  cy = rng.uniform(size, s - size)
  variant = rng.integers(0, 2, n)
  background = rng.uniform(0.0, 0.3, (n, channels))
  foreground = rng.uniform(0.55, 1.0, (n, channels))
  # A random linear ramp, so that no single pixel's level tells background from shape.
  ramp = rng.uniform(-0.15, 0.15, (n, 2))
  noise_std = rng.uniform(0.02, 0.08, n).astype(np.float32)

  coords = np.arange(s) + 0.5
  u = coords / s - 0.5
  images = np.empty((n, s, s, channels), np.float32)
  for label, idx in _class_chunks(labels):
    m = len(idx)
    dx = coords[None, None, :] - cx[idx, None, None]  # [m, 1, S]
    dy = coords[None, :, None] - cy[idx, None, None]  # [m, S, 1]
    params = [v[idx, None, None] for v in (size, width, variant)]
    mask = _shape_masks(label, dx, dy, *params)
    level = ramp[idx, 0, None, None] * u[None, None, :] + ramp[idx, 1, None, None] * u[:, None]
    img = np.where(mask[..., None], foreground[idx, None, None, :], background[idx, None, None, :])
    img = (img + level[..., None]).astype(np.float32)
    # Clutter: specks of 1x1 or 2x2 pixels anywhere, about one per 64 pixels.
    num_specks = s * s // 64
    sy = rng.integers(0, s - 1, m * num_specks)
    sx = rng.integers(0, s - 1, m * num_specks)
    big = rng.integers(0, 2, m * num_specks) == 1
    value = rng.uniform(0.3, 1.0, (m * num_specks, channels))
    rows = np.repeat(np.arange(m), num_specks)
    img[rows, sy, sx] = value
    for oy, ox in ((0, 1), (1, 0), (1, 1)):
      img[rows[big], sy[big] + oy, sx[big] + ox] = value[big]
    img += noise_std[idx, None, None, None] * rng.standard_normal(img.shape, np.float32)
    images[idx] = np.clip(img, 0.0, 1.0)
  return images


def generate_shapes(num_examples, seed, image_size=32, channels=1):
  """Shape images: (images [n, S, S, C] float32 in [0, 1], labels [n] int32).

  Each image holds one shape of class `SHAPES_CLASSES[label]` with half extent
  0.15-0.3 S at a uniformly random position, plus S*S/64 random specks, a
  random intensity ramp and Gaussian noise. With channels=3 the background,
  shape and specks get random colours. Cost: O(n S^2).
  """
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels}')
  rng = np.random.default_rng(seed)
  labels = _balanced_labels(rng, num_examples, len(SHAPES_CLASSES))
  return _render_shapes(rng, labels, image_size, channels), labels


# ----------------------------------------------------------------------------- tones


def _column(values, idx):
  """values[idx] as a float32 column [m, 1], to broadcast against time."""
  return values[idx, None].astype(np.float32)


def _render_tones(rng, labels, num_samples):
  """Waveforms [n, T] float32 in [-1, 1] for `labels` [n]."""
  n, t_len = len(labels), num_samples
  duration = np.floor(rng.uniform(0.3, 0.7, n) * t_len).astype(np.int64)
  onset = np.floor(rng.uniform(0.0, 1.0, n) * (t_len - duration + 1)).astype(np.int64)
  amplitude = rng.uniform(0.2, 0.6, n).astype(np.float32)
  noise_std = rng.uniform(0.005, 0.04, n).astype(np.float32)
  f0 = np.exp(rng.uniform(np.log(300.0), np.log(3000.0), n))  # Log-uniform, Hz.
  sweep = rng.uniform(2.0, 4.0, n)  # Chirp frequency ratio end/start.
  mod_rate = rng.uniform(15.0, 40.0, n)  # AM / FM rate, Hz.
  mod_depth = rng.uniform(0.7, 1.0, n)  # AM depth, and FM deviation 0.2-0.4 f0.
  chord_ratio = rng.uniform(1.25, 1.6, n)
  click_period = rng.uniform(0.004, 0.015, n) * SAMPLE_RATE
  phase = rng.uniform(0.0, 2 * np.pi, (n, 2))

  waves = np.empty((n, t_len), np.float32)
  for label, idx in _class_chunks(labels):
    name = TONES_CLASSES[label]
    col = functools.partial(_column, idx=idx)
    # Samples since onset; float32 (exact for integers < 2^24) is plenty for audio
    # and much faster than float64 here.
    k = np.arange(t_len, dtype=np.float32)[None, :] - col(onset)
    dur = col(duration)
    inside = (k >= 0) & (k < dur)
    t = np.maximum(k, 0) * np.float32(1 / SAMPLE_RATE)
    f, p0, p1 = col(f0), col(phase[:, 0]), col(phase[:, 1])
    if name == 'tone':
      w = np.sin(2 * np.pi * f * t + p0)
    elif name in ('chirp_up', 'chirp_down'):
      # Exponential sweep over the event's duration, at most 3000*4 Hz < Nyquist.
      ratio = col(sweep) if name == 'chirp_up' else 1 / col(sweep)
      rate = np.log(ratio) * SAMPLE_RATE / dur
      w = np.sin(2 * np.pi * f * np.expm1(rate * t) / rate + p0)
    elif name == 'am_tone':
      depth, rate = col(mod_depth), col(mod_rate)
      w = (1 - depth * (0.5 + 0.5 * np.cos(2 * np.pi * rate * t))) * np.sin(2 * np.pi * f * t + p0)
    elif name == 'fm_tone':
      rate = col(mod_rate)
      deviation = (0.2 + 0.2 * (col(mod_depth) - 0.7) / 0.3) * f
      w = np.sin(2 * np.pi * f * t + deviation / rate * np.sin(2 * np.pi * rate * t) + p0)
    elif name == 'noise_burst':
      w = 0.5 * rng.standard_normal(t.shape, np.float32)
    elif name == 'chord':
      w = 0.5 * (np.sin(2 * np.pi * f * t + p0) + np.sin(2 * np.pi * f * col(chord_ratio) * t + p1))
    else:  # 'clicks': one-sample impulses every click_period samples from the onset.
      period = col(click_period)
      w = np.floor(k / period) != np.floor((k - 1) / period)
    if name == 'clicks':
      w = (w & inside).astype(np.float32)
    else:
      # A 5 ms raised-cosine fade: a hard onset would sound like a click.
      fade = np.clip(dur // 4, 1, 80)
      env = np.clip(np.minimum(k + 1, dur - k) / fade, 0, 1)  # 0 outside the event.
      w = w * (0.5 - 0.5 * np.cos(np.float32(np.pi) * env))
    noise = rng.standard_normal(w.shape, np.float32)
    waves[idx] = np.clip(col(amplitude) * w + col(noise_std) * noise, -1.0, 1.0)
  return waves


def generate_tones(num_examples, seed, num_samples=8000):
  """Sound events in noise: (waves [n, T, 1] float32 in [-1, 1], labels [n] int32).

  Each 16 kHz waveform holds one event of class `TONES_CLASSES[label]` lasting
  30-70% of T at a random onset, peak amplitude 0.2-0.6, base frequency
  log-uniform in 300-3000 Hz, in white noise of std 0.005-0.04. Cost: O(n T).
  """
  rng = np.random.default_rng(seed)
  labels = _balanced_labels(rng, num_examples, len(TONES_CLASSES))
  return _render_tones(rng, labels, num_samples)[..., None], labels


# ----------------------------------------------------------------------------- listops


def _sample_structures(rng, num_trees, max_depth, max_args, max_len):
  """Random ListOps tree shapes, breadth first, for `num_trees` trees at once.

  LRA draws each node independently: below max_depth it is an operator with
  probability 0.25 (else a digit), with 2..max_args arguments uniformly. Drawing
  level by level in numpy gives the same distribution as LRA's recursion. Trees
  whose token count already reaches max_len stop growing (they are rejected).

  Returns (levels, lengths): levels a list of (tree [m], is_op [m], arity
  [num ops]) per depth, nodes ordered by tree then parent; lengths [num_trees]
  tokens per tree (a lower bound for trees that stopped growing).
  """
  tree = np.arange(num_trees)
  lengths = np.zeros(num_trees, np.int64)
  levels = []
  for depth in range(1, max_depth + 1):
    if depth < max_depth:
      is_op = rng.random(len(tree)) < 0.25
    else:
      is_op = np.zeros(len(tree), bool)
    arity = rng.integers(2, max_args + 1, int(is_op.sum()))
    levels.append((tree, is_op, arity))
    # A digit is one token, an operator two: '[OP' and ']'.
    lengths += np.bincount(tree, weights=1 + is_op, minlength=num_trees).astype(np.int64)
    children = np.repeat(tree[is_op], arity)
    if not len(children):
      break
    # Stop growing trees that are already too long; they stay rejected.
    hopeless = lengths + np.bincount(children, minlength=num_trees) >= max_len
    lengths[hopeless] = np.maximum(lengths[hopeless], max_len)
    tree = children[~hopeless[children]]
    if not len(tree):
      break
  return levels, lengths


def _keep_trees(levels, keep):
  """Restricts levels to trees with keep[tree]; renumbers trees 0.. in order."""
  new_id = np.cumsum(keep) - 1
  out = []
  for tree, is_op, arity in levels:
    sel = keep[tree]
    if not sel.any():
      break
    out.append((new_id[tree[sel]], is_op[sel], arity[sel[is_op]]))
  return out


def _serialize(rng, levels, num_trees, max_len):
  """Tokens [num_trees, max_len] int32 (CLS, expression, PAD) and values [num_trees]."""
  # Digits and operators of every node, drawn now that only kept trees remain.
  digits = [rng.integers(0, 10, len(tree)) for tree, _, _ in levels]
  ops = [rng.integers(0, 4, len(tree)) for tree, _, _ in levels]

  # Bottom-up: subtree token counts and values. Children of a level are grouped
  # by parent in the order of the parent level's operators.
  sizes, values = [None] * len(levels), [None] * len(levels)
  for d in reversed(range(len(levels))):
    tree, is_op, arity = levels[d]
    size = np.ones(len(tree), np.int64)
    value = digits[d].copy()
    if len(arity):
      starts = np.cumsum(arity) - arity
      child_size, child_value = sizes[d + 1], values[d + 1]
      size[is_op] = 2 + np.add.reduceat(child_size, starts)
      # Medians by counting (arguments are digits): the j-th smallest argument
      # (0-based) is the number of digits d with at most j arguments <= d.
      seg = np.repeat(np.arange(len(arity)), arity)
      counts = np.bincount(seg * 10 + child_value, minlength=10 * len(arity))
      cum = np.cumsum(counts.reshape(-1, 10), axis=1)
      median = sum((cum <= j[:, None]).sum(1) for j in ((arity - 1) // 2, arity // 2)) // 2
      candidates = np.stack([
          np.maximum.reduceat(child_value, starts),
          np.minimum.reduceat(child_value, starts),
          median,  # LRA: int(np.median(args)), i.e. floored for an even count.
          np.add.reduceat(child_value, starts) % 10,
      ])
      op = ops[d][is_op]
      value[is_op] = candidates[op, np.arange(len(op))]
    sizes[d], values[d] = size, value

  # Top-down: each node's token position; CLS sits at position 0.
  tokens = np.full((num_trees, max_len), PAD_ID, np.int32)
  tokens[:, 0] = CLS_ID
  pos = np.ones(num_trees, np.int64)
  for d, (tree, is_op, arity) in enumerate(levels):
    op_ids = np.asarray(LISTOPS_OPERATOR_IDS)[ops[d]]
    tokens[tree, pos] = np.where(is_op, op_ids, digits[d] + DIGIT_IDS[0])
    tokens[tree[is_op], pos[is_op] + sizes[d][is_op] - 1] = END_ID
    if not len(arity):
      break
    # A child starts after its parent's '[OP' and its elder siblings.
    child_size = sizes[d + 1]
    starts = np.cumsum(arity) - arity
    before = np.cumsum(child_size) - child_size
    before -= np.repeat(before[starts], arity)
    pos = np.repeat(pos[is_op] + 1, arity) + before
  return tokens, values[0].astype(np.int32)


def generate_listops(num_examples, seed, min_len=500, max_len=2000, max_depth=10, max_args=10):
  """ListOps as in Long Range Arena: (tokens [n, max_len] int32, labels [n] int32).

  Expressions like `[MAX 2 9 [MIN 4 7 ] 0 ]` over digits with operators MAX,
  MIN, MED (median, floored) and SM (sum modulo 10), at most max_depth levels
  and max_args arguments per operator, kept when their token count L satisfies
  min_len < L < max_len (LRA's bounds: 500, 2000). Row = [CLS, expression,
  PAD...]; label = value of the expression. Trees are drawn in batches and
  rejected by length, as LRA does, but vectorized: about 8% of trees are kept
  for LRA's bounds; cost O(n * mean tree size). (LRA also drops duplicate
  trees, which do not occur at these lengths.)
  """
  if not 0 <= min_len < max_len - 1:
    raise ValueError(f'need 0 <= min_len < max_len - 1, got min_len={min_len}, max_len={max_len}')
  rng = np.random.default_rng(seed)
  tokens, labels, count, tried = [], [], 0, 0
  while count < num_examples:
    # Enough trees for the rest at LRA's acceptance rate, within a memory bound.
    batch = int(min(max(1024, 16 * (num_examples - count)), 1 << 16))
    levels, lengths = _sample_structures(rng, batch, max_depth, max_args, max_len)
    keep = (lengths > min_len) & (lengths < max_len)
    keep &= np.cumsum(keep) <= num_examples - count
    tried += batch
    if keep.any():
      t, v = _serialize(rng, _keep_trees(levels, keep), int(keep.sum()), max_len)
      tokens.append(t)
      labels.append(v)
      count += len(v)
    elif tried > 1000 * max(num_examples, 1000):
      raise ValueError(f'ListOps lengths in ({min_len}, {max_len}) are too rare to sample; '
                       f'no tree kept in {tried} tries')
  if not tokens:
    return np.zeros((0, max_len), np.int32), np.zeros((0,), np.int32)
  return np.concatenate(tokens), np.concatenate(labels)
