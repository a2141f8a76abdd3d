r"""The accelerator benchmark: ceilings, kernels, training, compile time and decoding in one process.

  python benchmarks/accelerator.py                       # every section, ~6 min on one H200
  python benchmarks/accelerator.py --only kernels,train  # some sections (the ceilings always run)
  python benchmarks/accelerator.py --quick               # CPU smoke run in seconds: tiny sizes

Sections (each cell's failure or out-of-memory is recorded with the error's
first line, never fatal; cells left when a section's share of --budget_s is
spent are recorded as skipped):
  ceilings  matmul TFLOP/s (bf16 operands with float32 accumulation, float32 at
            the default precision, float32 at HIGHEST) and copy bandwidth
            (GB/s, read + write), measured in the run.
  kernels   every (kind, causal, implementation) of attention.TABLE beside
            jax.nn.dot_product_attention(implementation='cudnn') (bf16; 'xla'
            on CPU), forward and forward+backward, float32 and bf16 inputs, at
            n = 1k..64k with batch·n = 65536, 16 heads, d = 64; the linear kinds
            also at batch 1 up to n = 1M. Median ms and % of roofline.
  train     MLM and causal-LM tokens/s and MFU of a 12-layer, width-768 model
            at n = 8k and 32k: the paper's attention (bf16, float32) against
            softmax through jax.nn.dot_product_attention (bf16).
  compile   cold compile seconds of a jitted init, the train step and each
            kernel's forward+backward at n = 4k.
  decode    per-token latency of decode_step at contexts 1k and 64k.

Writes benchmarks/results/accelerator/<device>.json (every number) and .md
(one table per section), --quick under benchmarks/quick/accelerator/. Imports
only jax, optax, flax and linformer_jax's kernels and models: no tensorflow,
tensorflow_datasets or ml_collections (--check_imports fails the run if any
got imported).
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import sys
import time

# One process holds the device for the whole run: let it use most of the memory.
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.92')
if __name__ == '__main__' and '--quick' in sys.argv[1:]:
  # Compiling is most of a smoke run: XLA's LLVM optimisations off cut it ~3x
  # (as harness.quick_env); set before JAX is imported.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax import lax  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import linformer_jax as lj  # pylint: disable=g-import-not-at-top,wrong-import-position

SECTIONS = ('kernels', 'train', 'compile', 'decode')
# Share of --budget_s per section; time a section leaves unused goes to the later ones.
SHARES = {'kernels': 0.45, 'train': 0.35, 'compile': 0.12, 'decode': 0.08}
FORBIDDEN_MODULES = ('tensorflow', 'tensorflow_datasets', 'ml_collections')
DTYPES = {'bfloat16': jnp.bfloat16, 'float32': jnp.float32}
# The matmul rate each input dtype's kernels are bounded by: float32 kernels run at
# the default precision (TF32 on GPUs).
RATE_OF_DTYPE = {'bfloat16': 'bf16', 'float32': 'f32_default'}
DPA = 'dot_product_attention'  # the row of jax.nn.dot_product_attention itself
CHUNK = 64  # the causal kernels' chunk length (ModelConfig's default)
LINFORMER_K = 128


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Every size a run uses; `full()` for accelerators, `quick()` for the CPU smoke run."""
  matmul: int
  copy_elems: int
  tokens: int            # batch·n of the kernel grid
  ns: tuple
  long_ns: tuple         # batch 1, linear kinds only
  long_dtypes: tuple
  heads: int
  head_dim: int
  explicit_max_n: int    # largest n an explicit n×n softmax is tried at
  reps: int
  train_ns: tuple
  train_tokens: int
  train_float32: bool    # the float32 rows of the paper's attention
  model: dict
  compile_n: int
  decode_contexts: tuple
  decode_heads: int
  decode_steps: int

  @classmethod
  def full(cls):
    return cls(matmul=8192, copy_elems=1 << 28, tokens=65536, ns=(1024, 4096, 16384, 65536),
               long_ns=(262144, 1048576), long_dtypes=('bfloat16', 'float32'), heads=16,
               head_dim=64, explicit_max_n=16384, reps=5,
               train_ns=(8192, 32768), train_tokens=65536, train_float32=True,
               model=dict(num_layers=12, emb_dim=768, num_heads=12, mlp_dim=3072),
               compile_n=4096, decode_contexts=(1024, 65536), decode_heads=16, decode_steps=30)

  @classmethod
  def quick(cls):
    return cls(matmul=512, copy_elems=1 << 22, tokens=256, ns=(128,), long_ns=(512,),
               long_dtypes=('float32',), heads=2, head_dim=16, explicit_max_n=128, reps=2,
               train_ns=(256,), train_tokens=512, train_float32=False,
               model=dict(num_layers=2, emb_dim=64, num_heads=4, mlp_dim=128), compile_n=256,
               decode_contexts=(64, 256), decode_heads=2, decode_steps=3)


# ----------------------------------------------------------------------------- FLOPs and roofline


# The formula of each (kind, causal), from the kernel table.
FLOP_FORMULAS = {(name, causal): formula for name, kind in lj.TABLE.items()
                 for causal, formula in kind.flop_formula.items()}
FLOP_NOTE = ('Matmul FLOPs only (2 per multiply-add), b batch, n length, h heads, d head dim, '
             f'C = {CHUNK} causal chunk, k = {LINFORMER_K} Linformer rows; forward+backward = 3× '
             'forward (two gradient matmuls per matmul; recomputation not counted).')


def forward_flops(kind, causal, b, n, h, d, chunk=CHUNK, k=LINFORMER_K):
  """Matmul FLOPs of one forward call of `kind` (DPA counts as 'softmax'), from the kernel table."""
  kind = 'softmax' if kind == DPA else kind
  return lj.TABLE[kind].flops(b, n, h, d, causal=causal, chunk=chunk, rows=k)


def kernel_flops(kind, causal, mode, b, n, h, d):
  return forward_flops(kind, causal, b, n, h, d) * (1 if mode == 'fwd' else 3)


def kernel_bytes(mode, b, n, h, d, itemsize):
  """Bytes that must move at least: q, k, v read and the output written (forward);
  q, k, v read and their gradients written (forward+backward)."""
  return (4 if mode == 'fwd' else 6) * b * n * h * d * itemsize


def roofline(flops, nbytes, seconds, flop_rate, byte_rate):
  """(bound seconds, fraction of roofline): the bound is the larger of the compute
  and the memory time at the measured rates; the fraction is bound / measured."""
  bound = max(flops / flop_rate, nbytes / byte_rate)
  return bound, bound / seconds


def train_flops(n_params, tokens, layers, kind, causal, batch, n, heads, head_dim):
  """6·N·T (forward+backward of every parameter) plus 3 × each layer's attention matmuls."""
  attn = 3 * layers * forward_flops(kind, causal, batch, n, heads, head_dim)
  return 6 * n_params * tokens + attn, attn


def mfu(flops, seconds, peak):
  return flops / seconds / peak


# ----------------------------------------------------------------------------- plumbing


def median(xs):
  xs = sorted(xs)
  mid = len(xs) // 2
  return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def time_calls(fn, reps, max_s=2.0):
  """(median seconds, timed calls, warm-up seconds) of fn(), which must block,
  after one warm-up call; fewer calls once they took max_s."""
  tic = time.perf_counter()
  fn()
  warmup = time.perf_counter() - tic
  times = []
  while len(times) < reps and (not times or sum(times) + warmup < max_s):
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
  return median(times), len(times), warmup


def first_line(err):
  text = str(err).strip().splitlines()
  return f'{type(err).__name__}: {text[0] if text else ""}'[:300]


def guarded(fn, base):
  """base updated with fn()'s dict, or with status 'failed' and the error's first line."""
  try:
    return dict(base, **fn())
  except Exception as err:  # pylint: disable=broad-except
    return dict(base, status='failed', reason=first_line(err))


def compile_timed(fn, *specs):
  tic = time.perf_counter()
  compiled = jax.jit(fn).lower(*specs).compile()
  return compiled, time.perf_counter() - tic


def device_limit():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('bytes_limit')


def planned_bytes(compiled):
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def uses_cudnn(compiled):
  """Whether XLA runs a cuDNN fused-attention call (cuDNN's custom call in the HLO)."""
  try:
    return '__cudnn$fmha' in compiled.as_text()
  except Exception:  # pylint: disable=broad-except
    return None


def sanitise(name):
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'device'


class Clock:
  """Section deadlines: each section gets its share of what is left of the budget."""

  def __init__(self, budget_s, sections):
    self.end = time.time() + budget_s
    self.left = list(sections)

  def start(self, section):
    shares = sum(SHARES[s] for s in self.left)
    deadline = time.time() + max(self.end - time.time(), 0) * SHARES[section] / shares
    self.left.remove(section)
    return deadline


# ----------------------------------------------------------------------------- ceilings


def measure_ceilings(sizes):
  """Matmul rates (FLOP/s) by setting and the copy rate (bytes/s, read + write)."""
  out = {}
  size = sizes.matmul
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  for name, dtype, precision in (('bf16', jnp.bfloat16, None), ('f32_default', jnp.float32, None),
                                 ('f32_highest', jnp.float32, lax.Precision.HIGHEST)):
    a, b = (jax.random.normal(key, (size, size), dtype) for key in keys)
    mm, _ = compile_timed(lambda a, b, p=precision: jnp.matmul(
        a, b, precision=p, preferred_element_type=jnp.float32), a, b)
    t, runs, _ = time_calls(lambda: mm(a, b).block_until_ready(), reps=10)
    out[f'matmul_{name}'] = {'flop_s': 2 * size ** 3 / t, 'median_s': t, 'runs': runs, 'size': size}
  x = jnp.zeros((sizes.copy_elems,), jnp.float32)
  copy, _ = compile_timed(lambda x: x + 1.0, x)
  t, runs, _ = time_calls(lambda: copy(x).block_until_ready(), reps=10)
  out['copy'] = {'bytes_s': 2 * x.nbytes / t, 'median_s': t, 'runs': runs, 'bytes': x.nbytes}
  return out


# ----------------------------------------------------------------------------- kernels


def kernel_paths(platform_name):
  """(kind, causal, implementation, skip reason or None) for every kernel path of
  the table, then jax.nn.dot_product_attention's own row."""
  paths = []
  for kind, record in lj.TABLE.items():
    for causal in (False, True):
      if causal and record.causal is None:
        continue
      for impl in (record.causal_implementations if causal else record.implementations) or (None,):
        skip = None
        if impl == 'pallas' and platform_name != 'gpu':
          skip = 'pallas runs in interpret mode off GPUs (a test path, not a kernel to time)'
        paths.append((kind, causal, impl, skip))
  impl = 'cudnn' if platform_name == 'gpu' else 'xla'
  paths += [(DPA, causal, impl, None) for causal in (False, True)]
  return paths


def explicit_scores(kind, impl, dtype, platform_name):
  """Whether this path forms the n×n scores in memory."""
  if kind == 'softmax':
    if impl == 'blocked':
      return False  # blocks of queries: O(block·n) scores
    # 'jax' is jax.nn.dot_product_attention with implementation=None, which is XLA's
    # explicit form in float32 (and, in JAX 0.10, always); bf16 on GPU may reach cuDNN.
    return impl == 'xla' or dtype == 'float32' or platform_name != 'gpu'
  return kind == DPA and impl == 'xla'


def kernel_plan(sizes, platform_name):
  """Every kernel row, in run order (bf16 grid, float32 grid, then the long linear rows),
  each with status None (to run) or 'skipped' and a reason."""
  rows = []

  def add(kind, causal, impl, skip, dtype, n, batch, grid):
    for mode in ('fwd', 'fwd_bwd'):
      row = dict(kind=kind, causal=causal, implementation=impl or 'default', dtype=dtype, mode=mode,
                 n=n, batch=batch, heads=sizes.heads, head_dim=sizes.head_dim, grid=grid,
                 status=None)
      if skip:
        row.update(status='skipped', reason=skip)
      elif n > sizes.explicit_max_n and explicit_scores(kind, impl, dtype, platform_name):
        row.update(status='skipped', reason=f'explicit n×n scores: not tried above n = '
                                            f'{sizes.explicit_max_n}')
      rows.append(row)

  for dtype in ('bfloat16', 'float32'):
    for n in sizes.ns:
      for kind, causal, impl, skip in kernel_paths(platform_name):
        if kind == DPA and dtype != 'bfloat16' and impl == 'cudnn':
          continue  # cuDNN's fused attention takes half precision only
        add(kind, causal, impl, skip, dtype, n, sizes.tokens // n, 'main')
  for dtype in sizes.long_dtypes:
    for n in sizes.long_ns:
      for kind, causal, impl, skip in kernel_paths(platform_name):
        if kind in ('linear', 'elu_linear'):
          add(kind, causal, impl, skip, dtype, n, 1, 'long')
  return rows


def kernel_fn(kind, causal, impl, n, dtype):
  """(f(q, k, v, *extra), extra): the call to time; Linformer's projections are
  arguments so that XLA cannot fold them."""
  if kind == DPA:
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                                        implementation=impl), ()
  impl = None if impl == 'default' else impl
  if lj.TABLE[kind].needs_projections:
    proj = tuple((jax.random.normal(jax.random.PRNGKey(i), (LINFORMER_K, n)) /
                  math.sqrt(LINFORMER_K)).astype(dtype) for i in (1, 2))
    return (lambda q, k, v, e, f: lj.attend(kind, q, k, v, projections=(e, f),
                                            implementation=impl)), proj
  return lambda q, k, v: lj.attend(kind, q, k, v, causal=causal, chunk_size=CHUNK,
                                   implementation=impl), ()


def kernel_step(row):
  """(the jittable function, its example arguments as ShapeDtypeStructs, extra arrays)."""
  dtype = DTYPES[row['dtype']]
  fn, extra = kernel_fn(row['kind'], row['causal'], row['implementation'], row['n'], dtype)
  shape = (row['batch'], row['n'], row['heads'], row['head_dim'])
  specs = (jax.ShapeDtypeStruct(shape, dtype),) * 3 + tuple(
      jax.ShapeDtypeStruct(x.shape, x.dtype) for x in extra)
  if row['mode'] == 'fwd':
    return fn, specs, extra
  loss = lambda q, k, v, *e: fn(q, k, v, *e).astype(jnp.float32).sum()
  return jax.grad(loss, argnums=(0, 1, 2)), specs, extra


def kernel_compile_s(row):
  fn, specs, _ = kernel_step(row)
  return compile_timed(fn, *specs)[1]


def run_kernel(row, rates, reps):
  fn, specs, extra = kernel_step(row)
  compiled, compile_s = compile_timed(fn, *specs)
  out = {'compile_s': compile_s, 'planned_bytes': planned_bytes(compiled)}
  if jax.devices()[0].platform == 'gpu':
    out['cudnn'] = uses_cudnn(compiled)
  limit = device_limit()
  if limit and out['planned_bytes'] and out['planned_bytes'] > limit:
    return dict(out, status='skipped', reason=f"XLA plans {out['planned_bytes'] / 2 ** 30:.1f} GiB "
                                              f'> the device limit {limit / 2 ** 30:.1f} GiB')
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  args = tuple(jax.random.normal(key, s.shape, s.dtype) for key, s in zip(keys, specs)) + extra
  t, runs, warmup = time_calls(lambda: jax.block_until_ready(compiled(*args)), reps)
  del args
  b, n, h, d = row['batch'], row['n'], row['heads'], row['head_dim']
  flops = kernel_flops(row['kind'], row['causal'], row['mode'], b, n, h, d)
  nbytes = kernel_bytes(row['mode'], b, n, h, d, jnp.dtype(DTYPES[row['dtype']]).itemsize)
  bound, frac = roofline(flops, nbytes, t, rates[RATE_OF_DTYPE[row['dtype']]], rates['copy'])
  return dict(out, status='ok', median_ms=t * 1e3, runs=runs, warmup_ms=warmup * 1e3, flops=flops,
              bytes=nbytes, bound_ms=bound * 1e3, roofline_fraction=frac,
              bound_by='flops' if flops / rates[RATE_OF_DTYPE[row['dtype']]] >= nbytes / rates['copy']
              else 'bytes')


def section_kernels(sizes, rates, deadline, log):
  rows = []
  for row in kernel_plan(sizes, jax.devices()[0].platform):
    if row['status'] is None and time.time() > deadline:
      row.update(status='skipped', reason='time budget of the section spent')
    elif row['status'] is None:
      row = guarded(lambda r=row: run_kernel(r, rates, sizes.reps), row)
    rows.append(row)
    log(f"kernel {_label(row)} {row['dtype']} {row['mode']} n={row['n']}: " + _cell(row))
  return rows


def _label(row):
  causal = ' causal' if row['causal'] else ''
  return f"{row['kind']}{causal} ({row['implementation']})"


def _cell(row):
  if row['status'] == 'ok':
    return f"{row['median_ms']:.3g} ms ({100 * row['roofline_fraction']:.2g}%)"
  return f"{row['status']}: {row['reason']}"


# ----------------------------------------------------------------------------- training


def train_plan(sizes):
  """(task, attention, dtype) × n, in run order: bf16 rows at each n, then float32 (not --quick)."""
  rows = []
  for n in sizes.train_ns:
    for task in ('mlm', 'lm'):
      rows += [dict(task=task, attention='linear', dtype='bfloat16', n=n),
               dict(task=task, attention='softmax', dtype='bfloat16', n=n)]
  if sizes.train_float32:
    rows += [dict(task=task, attention='linear', dtype='float32', n=n)
             for n in sizes.train_ns for task in ('mlm', 'lm')]
  for row in rows:
    row.update(batch=sizes.train_tokens // row['n'], status=None)
  return rows


def model_of(row, sizes):
  config = lj.ModelConfig(
      vocab_size=260, pad_id=None, max_len=row['n'], attention=row['attention'],
      implementation='jax' if row['attention'] == 'softmax' else 'auto',
      causal=row['task'] == 'lm', position='sinusoidal', dtype=row['dtype'], chunk_size=CHUNK,
      **sizes.model)
  return (lj.LanguageModel if row['task'] == 'lm' else lj.MLMModel)(config), config


def optimizer():
  # The trainer's update (trainer.create_optimizer) at a constant learning rate.
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.01))


def train_step_fn(model, tx):
  def step(params, opt_state, tokens, targets, weights, rng):
    def loss_fn(p):
      logits = model.apply({'params': p}, tokens, deterministic=False, rngs={'dropout': rng})
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def batch_of(task, batch, n, vocab=256):
  """Random tokens, targets and weights: 15% of positions scored for MLM, every next token for LM."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  tokens = jax.random.randint(k1, (batch, n), 0, vocab)
  if task == 'lm':
    return tokens, jnp.roll(tokens, -1, axis=1), jnp.ones((batch, n), jnp.float32)
  targets = jax.random.randint(k2, (batch, n), 0, vocab)
  return tokens, targets, (jax.random.uniform(k3, (batch, n)) < 0.15).astype(jnp.float32)


def run_train(row, sizes, rates):
  model, config = model_of(row, sizes)
  tx = optimizer()
  tokens, targets, weights = batch_of(row['task'], row['batch'], row['n'])
  init, init_s = compile_timed(lambda key: model.init(key, tokens), jax.random.PRNGKey(0))
  params = init(jax.random.PRNGKey(0))['params']
  n_params = sum(x.size for x in jax.tree.leaves(params))
  opt_state = tx.init(params)
  rng = jax.random.PRNGKey(2)
  tic = time.perf_counter()
  step = jax.jit(train_step_fn(model, tx), donate_argnums=(0, 1)).lower(
      params, opt_state, tokens, targets, weights, rng).compile()
  compile_s = time.perf_counter() - tic
  state = [params, opt_state]
  del params, opt_state

  def call():
    state[0], state[1], loss = step(*state, tokens, targets, weights, rng)
    loss.block_until_ready()
    return loss

  t, runs, warmup = time_calls(call, sizes.reps, max_s=10.0)
  loss = float(call())
  del state
  flops, attn_flops = train_flops(n_params, row['batch'] * row['n'], config.num_layers,
                                  config.attention, config.causal, row['batch'], row['n'],
                                  config.num_heads, config.head_dim)
  out = dict(status='ok', params=n_params, step_ms=t * 1e3, runs=runs, warmup_ms=warmup * 1e3,
             tokens_per_s=row['batch'] * row['n'] / t, flops=flops, attention_flops=attn_flops,
             mfu=mfu(flops, t, rates['bf16']), loss=loss, finite=math.isfinite(loss),
             compile_s=compile_s, init_compile_s=init_s)
  if jax.devices()[0].platform == 'gpu':
    out['cudnn'] = uses_cudnn(step)
  return out


def section_train(sizes, rates, deadline, log):
  rows = []
  for row in train_plan(sizes):
    if time.time() > deadline:
      row.update(status='skipped', reason='time budget of the section spent')
    else:
      row = guarded(lambda r=row: run_train(r, sizes, rates), row)
      jax.clear_caches()
    rows.append(row)
    cell = (f"{row['tokens_per_s']:.4g} tokens/s, MFU {100 * row['mfu']:.3g}%"
            if row['status'] == 'ok' else f"{row['status']}: {row['reason']}")
    log(f"train {row['task']} {row['attention']} {row['dtype']} n={row['n']}: {cell}")
  return rows


# ----------------------------------------------------------------------------- compile


def section_compile(sizes, deadline, log):
  """Cold compile seconds: in-memory caches cleared before each, persistent cache off."""
  n = sizes.compile_n
  row = dict(task='mlm', attention='linear', dtype='bfloat16', n=n, batch=sizes.train_tokens // n)
  model, _ = model_of(row, sizes)
  tx = optimizer()
  tokens = jax.ShapeDtypeStruct((row['batch'], n), jnp.int32)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  items = []

  def init_s():
    return {'compile_s': compile_timed(lambda k: model.init(k, jnp.zeros(tokens.shape, jnp.int32)),
                                       key)[1]}

  def step_s():
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros(tokens.shape, jnp.int32)),
                            jax.random.PRNGKey(0))['params']
    opt = jax.eval_shape(tx.init, params)
    weights = jax.ShapeDtypeStruct(tokens.shape, jnp.float32)
    return {'compile_s': compile_timed(train_step_fn(model, tx), params, opt, tokens, tokens,
                                       weights, key)[1]}

  model_name = f"MLM, {sizes.model['num_layers']} layers, width {sizes.model['emb_dim']}, linear, bf16"
  work = [(f'init ({model_name})', init_s), (f'train step ({model_name})', step_s)]
  for kind, causal, impl, skip in kernel_paths(jax.devices()[0].platform):
    kernel = dict(kind=kind, causal=causal, implementation=impl or 'default', dtype='bfloat16',
                  mode='fwd_bwd', n=n, batch=sizes.tokens // n if sizes.tokens >= n else 1,
                  heads=sizes.heads, head_dim=sizes.head_dim)
    work.append((f'{_label(kernel)} forward+backward, bf16',
                 skip or (lambda k=kernel: {'compile_s': kernel_compile_s(k)})))
  for name, fn in work:
    base = dict(name=name, n=n, status=None)
    if isinstance(fn, str):
      item = dict(base, status='skipped', reason=fn)
    elif time.time() > deadline:
      item = dict(base, status='skipped', reason='time budget of the section spent')
    else:
      jax.clear_caches()
      item = guarded(lambda fn=fn: dict(fn(), status='ok'), base)
    items.append(item)
    log(f"compile {name}: " + (f"{item['compile_s']:.2f} s" if item['status'] == 'ok'
                               else f"{item['status']}: {item['reason']}"))
  return items


# ----------------------------------------------------------------------------- decode


def run_decode(kind, ctx, sizes):
  """As benchmarks/decode.py: prefill the state, then time single jitted steps."""
  b, h, d = 1, sizes.decode_heads, sizes.head_dim
  warmup, steps = 3, sizes.decode_steps
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  k, v = (jax.random.normal(key, (b, ctx, h, d)) for key in keys[:2])
  total = warmup + steps
  state = lj.causal_state(kind, k, v, max_len=ctx + total if lj.TABLE[kind].bounded_context else None)
  del k, v
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  q, k, v = (jax.random.normal(key, (total, b, h, d)) for key in keys[2:])
  step = jax.jit(lambda state, q, k, v: lj.decode_step(kind, state, q, k, v), donate_argnums=0)
  step = step.lower(state, q[0], k[0], v[0]).compile()
  times = []
  for i in range(total):
    tic = time.perf_counter()
    out, state = step(state, q[i], k[i], v[i])
    jax.block_until_ready(out)
    if i >= warmup:
      times.append(time.perf_counter() - tic)
  return {'status': 'ok', 'median_ms': median(times) * 1e3, 'min_ms': min(times) * 1e3,
          'steps': steps, 'state_bytes': state_bytes, 'finite': bool(jnp.isfinite(out).all())}


def section_decode(sizes, deadline, log):
  rows = []
  for ctx in sizes.decode_contexts:
    for kind in lj.DECODE_KINDS:
      row = dict(kind=kind, context=ctx, batch=1, heads=sizes.decode_heads, head_dim=sizes.head_dim,
                 status=None)
      if time.time() > deadline:
        row.update(status='skipped', reason='time budget of the section spent')
      else:
        row = guarded(lambda: run_decode(kind, ctx, sizes), row)
      rows.append(row)
      log(f"decode {kind} context {ctx}: " + (f"{row['median_ms']:.3g} ms" if row['status'] == 'ok'
                                             else f"{row['status']}: {row['reason']}"))
  return rows


# ----------------------------------------------------------------------------- report


def _pct(x):
  return f'{100 * x:.3g}%'


def _status(r):
  return f"{r['status']}: {r['reason']}"


def markdown(report):
  meta, ceil = report['meta'], report['ceilings']
  lines = ['# Accelerator benchmark', '',
           f"`{meta['command']}`; {meta['device_kind']} ({meta['platform']}), JAX "
           f"{meta['jax_version']}, {meta['date']}; {meta['host']}; {meta['elapsed_s']:.0f} s.", '']
  if meta['quick']:
    lines += ['**--quick smoke run: tiny sizes, the numbers mean nothing.**', '']
  if meta['platform'] != 'gpu':
    lines += [f'Not a GPU: the `{DPA}` rows use implementation=\'xla\' (cuDNN is GPU-only), '
              "'pallas' is not timed (interpret mode).", '']
  lines += ['## Ceilings (measured in this run)', '', _table(
      ['measure', 'rate', 'size'],
      [[f'matmul {k[len("matmul_"):]}', f"{v['flop_s'] / 1e12:.4g} TFLOP/s", f"{v['size']}²"]
       for k, v in ceil.items() if k.startswith('matmul_')]
      + [['copy (read + write)', f"{ceil['copy']['bytes_s'] / 1e9:.4g} GB/s",
          f"{ceil['copy']['bytes'] / 2 ** 20:.0f} MiB"]]), '',
      'Matmuls: bf16 operands with float32 accumulation; float32 at the default precision '
      '(TF32 on GPUs); float32 at HIGHEST.', '']
  if 'kernels' in report:
    lines += _kernel_tables(report['kernels'])
  if 'train' in report:
    lines += _train_table(report['train'])
  if 'compile' in report:
    lines += ['## Compile (cold: caches cleared, persistent cache off)', '', _table(
        ['what', 'n', 'seconds'],
        [[c['name'], c['n'], f"{c['compile_s']:.2f}" if c['status'] == 'ok' else _status(c)]
         for c in report['compile']]), '']
  if 'decode' in report:
    rows = report['decode']
    ctxs = sorted({r['context'] for r in rows})
    table = []
    for kind in lj.DECODE_KINDS:
      cells = []
      for ctx in ctxs:
        r = next(r for r in rows if r['kind'] == kind and r['context'] == ctx)
        cells.append(f"{r['median_ms']:.3g} ({r['state_bytes'] / 2 ** 20:.3g} MiB)"
                     if r['status'] == 'ok' else _status(r))
      table.append([kind] + cells)
    r0 = rows[0]
    lines += ['## Decode: per-token latency, median ms (state memory)', '',
              f"Batch 1, {r0['heads']} heads, d = {r0['head_dim']}, float32 state; jitted "
              'decode_step with the state donated; softmax keeps a KV cache of context + steps slots.',
              '', _table(['kind'] + [f'context {c}' for c in ctxs], table), '']
  lines += [f"Forbidden modules imported: {report['forbidden_imports'] or 'none'}."]
  return '\n'.join(lines) + '\n'


def _table(headers, rows):
  out = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
  return '\n'.join(out + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def _kernel_tables(rows):
  lines = ['## Kernels: median ms (% of roofline)', '',
           'Roofline bound = max(FLOPs / the measured matmul rate of the input dtype (float32: '
           'default precision), bytes / the measured copy rate); % = bound / measured. ' + FLOP_NOTE,
           'Bytes: q, k, v read and the output written (forward); q, k, v read and their gradients '
           'written (forward+backward).', '',
           _table(['kind', 'causal', 'FLOPs (forward)'],
                  [[k, 'yes' if c else 'no', f] for (k, c), f in FLOP_FORMULAS.items()]), '']
  for grid, title in (('main', 'batch·n = {tokens}'), ('long', 'batch 1')):
    sel = [r for r in rows if r['grid'] == grid]
    if not sel:
      continue
    ns = sorted({r['n'] for r in sel})
    r0 = sel[0]
    lines += [f"### {title.format(tokens=r0['batch'] * r0['n'])}, {r0['heads']} heads, "
              f"d = {r0['head_dim']}", '']
    table = []
    seen = []
    for r in sel:
      key = (r['kind'], r['causal'], r['implementation'], r['dtype'], r['mode'])
      if key not in seen:
        seen.append(key)
    for key in seen:
      cells = []
      for n in ns:
        r = next((r for r in sel if (r['kind'], r['causal'], r['implementation'], r['dtype'],
                                     r['mode']) == key and r['n'] == n), None)
        cells.append('' if r is None else _cell(r))
      kind, causal, impl, dtype, mode = key
      table.append([_label(dict(kind=kind, causal=causal, implementation=impl)), dtype,
                    mode.replace('fwd_bwd', 'fwd+bwd')] + cells)
    lines += [_table(['kernel', 'dtype', 'pass'] + [f'n = {n}' for n in ns], table), '']
  return lines


def _train_table(rows):
  lines = ['## Training: tokens/s and MFU', '',
           'MFU = (6·N·T + attention FLOPs) / (step time · the measured bf16 matmul rate), N '
           'parameters, T tokens per step; attention FLOPs = 3 · layers · the forward formula of '
           'the kernel table (h = heads, d = head dim). Random tokens, no padding, dropout 0.1, '
           "AdamW with global-norm clipping (the trainer's update); softmax is ModelConfig("
           "attention='softmax', implementation='jax'), i.e. jax.nn.dot_product_attention.", '']
  table = []
  for r in rows:
    name = f"{r['task'].upper()} {r['attention']} ({r['dtype']})"
    if r['status'] == 'ok':
      cudnn = {True: 'yes', False: 'no'}.get(r.get('cudnn'), '-')
      table.append([name, r['n'], r['batch'], f"{r['tokens_per_s']:.4g}", _pct(r['mfu']),
                    f"{r['step_ms']:.4g}", f"{r['params'] / 1e6:.1f}M", cudnn,
                    f"{r['compile_s']:.1f}"])
    else:
      table.append([name, r['n'], r['batch'], _status(r), '', '', '', '', ''])
  lines += [_table(['model', 'n', 'batch', 'tokens/s', 'MFU', 'step ms', 'params',
                    'cuDNN in HLO', 'compile s'], table), '']
  return lines


# ----------------------------------------------------------------------------- main


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--only', default=','.join(SECTIONS), help=f'comma-separated subset of {SECTIONS}')
  p.add_argument('--quick', action='store_true', help='CPU smoke run: tiny sizes')
  p.add_argument('--budget_s', type=float, default=None,
                 help='seconds for all sections after the ceilings (default 330; --quick 600)')
  p.add_argument('--out', help='output folder (default benchmarks/results/accelerator/, '
                               '--quick benchmarks/quick/accelerator/)')
  p.add_argument('--check_imports', action='store_true',
                 help=f'exit 1 if any of {FORBIDDEN_MODULES} got imported')
  args = p.parse_args(argv)
  args.sections = [s for s in args.only.split(',') if s]
  bad = [s for s in args.sections if s not in SECTIONS]
  if bad:
    p.error(f'unknown section(s) {bad}; valid: {SECTIONS}')
  if args.budget_s is None:
    args.budget_s = 600.0 if args.quick else 330.0
  return args


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  # Compile times must be cold, and every section compiles afresh.
  jax.config.update('jax_enable_compilation_cache', False)
  sizes = Sizes.quick() if args.quick else Sizes.full()
  dev = jax.devices()[0]
  tic = time.time()
  log = lambda msg: print(f'[{time.time() - tic:6.1f}s] {msg}', flush=True)
  ceilings = measure_ceilings(sizes)
  rates = {k[len('matmul_'):]: v['flop_s'] for k, v in ceilings.items() if k.startswith('matmul_')}
  rates['copy'] = ceilings['copy']['bytes_s']
  log('ceilings: ' + ', '.join(f'{k} {v:.4g}' for k, v in rates.items()))
  report = {'ceilings': ceilings, 'sizes': dataclasses.asdict(sizes), 'flop_formulas': {
      f"{k}{' causal' if c else ''}": f for (k, c), f in FLOP_FORMULAS.items()}}
  clock = Clock(args.budget_s, [s for s in SECTIONS if s in args.sections])
  for section in SECTIONS:
    if section not in args.sections:
      continue
    deadline = clock.start(section)
    if section == 'kernels':
      report['kernels'] = section_kernels(sizes, rates, deadline, log)
    elif section == 'train':
      report['train'] = section_train(sizes, rates, deadline, log)
    elif section == 'compile':
      report['compile'] = section_compile(sizes, deadline, log)
    else:
      report['decode'] = section_decode(sizes, deadline, log)
  report['forbidden_imports'] = [m for m in FORBIDDEN_MODULES if m in sys.modules]
  report['meta'] = {
      'command': 'python benchmarks/accelerator.py ' + ' '.join(argv), 'quick': args.quick,
      'device_kind': dev.device_kind, 'platform': dev.platform, 'device_count': jax.device_count(),
      'jax_version': jax.__version__,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'host': f'{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}',
      'elapsed_s': time.time() - tic}
  report = dict(meta=report.pop('meta'), **report)
  here = os.path.dirname(os.path.abspath(__file__))
  out = args.out or os.path.join(here, 'quick' if args.quick else 'results', 'accelerator')
  os.makedirs(out, exist_ok=True)
  name = sanitise(dev.device_kind)
  md = markdown(report)
  with open(os.path.join(out, f'{name}.json'), 'w') as f:
    json.dump(report, f, indent=1)
    f.write('\n')
  with open(os.path.join(out, f'{name}.md'), 'w') as f:
    f.write(md)
  print(md)
  print(os.path.join(out, f'{name}.json'))
  if args.check_imports and report['forbidden_imports']:
    sys.exit(f"imported {report['forbidden_imports']}")


if __name__ == '__main__':
  main()
