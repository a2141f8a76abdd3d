"""Every kernel path against float64 references (attention/naive.py): each kind, causal and not, each
implementation (forced, whatever the backend), float32 and float64, values and
gradients, at key spreads that make chunked denominators underflow.

Tolerances are max-norm relative errors, max|got - want| / max|want|: float64
<= 1e-10; float32 <= 1e-5 for values and 1e-4 for gradients. Matmul precision
is set explicitly (HIGHEST), so the same tolerances hold on a GPU, where the
default float32 matmul is TF32.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import linformer_jax as lj
from linformer_jax.attention import naive
from test_attention import _sub_jaxprs

HIGHEST = lax.Precision.HIGHEST
B, N, H, D, DV = 2, 37, 2, 4, 3  # N = 37 is a multiple of no chunk size below but 1
SPREADS = {'keys x1': (1.0, 0.0), 'keys x30': (30.0, 0.0), 'a +50 outlier': (1.0, 50.0)}
TOL = {'float64': (1e-10, 1e-10), 'float32': (1e-5, 1e-4)}
WINDOW = 8  # the windowed kinds' window: N = 37 is no multiple of it, and it is shorter than N


def _paths():
  """(kind, causal, implementation) for every path the table offers (None where there is one)."""
  paths = []
  for name, kind in lj.TABLE.items():
    for causal in (False, True):
      if causal and kind.causal is None:
        continue
      impls = kind.causal_implementations if causal else kind.implementations
      paths += [(name, causal, impl) for impl in (impls or (None,))]
  return paths


def _naive(kind, causal):
  """The kind's explicit n×n reference (attention/naive.py) as fn(q, k, v, mask, e, f)."""
  ref = lj.TABLE[kind].naive
  if lj.TABLE[kind].needs_projections:
    return lambda q, k, v, mask, e, f: ref(q, k, v, mask, causal, (e, f))
  if lj.TABLE[kind].windowed:
    return lambda q, k, v, mask, e, f: ref(q, k, v, mask, causal, WINDOW)
  return lambda q, k, v, mask, e, f: ref(q, k, v, mask, causal)
def _window(kind):
  """attend's window= for `kind`: WINDOW for the windowed kinds, None (not taken) otherwise."""
  return WINDOW if lj.TABLE[kind].windowed else None




def _data(dtype, spread, seed=0):
  rng = np.random.default_rng(seed)
  scale, outlier = spread
  q, k = rng.normal(size=(2, B, N, H, D))
  k = scale * k
  k[0, 11, 1] += outlier  # a key that dwarfs every key before it
  v = rng.normal(size=(B, N, H, DV))
  mask = rng.random((B, N)) > 0.25
  mask[1, :4] = False  # leading padding: positions with no real key yet
  e, f = rng.normal(size=(2, 5, N)) / np.sqrt(5)
  cot = rng.normal(size=(B, N, H, DV))
  cast = lambda x: jnp.asarray(x, dtype)
  return tuple(map(cast, (q, k, v))), jnp.asarray(mask), tuple(map(cast, (e, f))), cast(cot)


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)


@functools.lru_cache(maxsize=None)
def _reference(kind, causal):
  """The jitted float64 reference of (kind, causal), one per pair: it compiles once."""
  return _out_and_grads(_naive(kind, causal))


def _out_and_grads(fn):
  """jit of (q, k, v, mask, e, f, cot) -> (out, d<out, cot>/d(q, k, v))."""
  def run(q, k, v, mask, e, f, cot):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, e, f), q, k, v)
    return out, vjp(cot)
  return jax.jit(run)


# float64 is in the whole suite (slow): the fast suite runs float32, every path and chunk size.
@pytest.mark.parametrize('dtype', ['float32', pytest.param('float64', marks=pytest.mark.slow)])
@pytest.mark.parametrize('kind,causal,impl', _paths())
def test_every_path_matches_float64_reference(kind, causal, impl, dtype):
  if impl == 'pallas' and dtype == 'float64':
    pytest.skip("the Pallas kernel computes in float32; 'pallas' refuses float64 inputs "
                '(test_pallas_refuses_float64)')
  value_tol, grad_tol = TOL[dtype]
  chunk_sizes = [1, 8, 64] if causal and kind in ('linear', 'elu_linear') else [64]
  with jax.enable_x64(True):
    want_fn = _reference(kind, causal)
    for chunk_size in chunk_sizes:
      got_fn = _out_and_grads(lambda q, k, v, mask, e, f: lj.attend(
          kind, q, k, v, key_mask=mask, causal=causal, chunk_size=chunk_size,
          projections=(e, f) if lj.TABLE[kind].needs_projections else None, implementation=impl,
          precision=HIGHEST, window=_window(kind)))
      for spread_name, spread in SPREADS.items():
        qkv, mask, ef, cot = _data(dtype, spread)
        want_out, want_grads = want_fn(*(x.astype(jnp.float64) for x in qkv), mask,
                                       *(x.astype(jnp.float64) for x in ef), cot.astype(jnp.float64))
        out, grads = got_fn(*qkv, mask, *ef, cot)
        where = f'{spread_name}, chunk_size={chunk_size}'
        assert out.dtype == jnp.dtype(dtype), where
        for name, x in zip(('out', 'dq', 'dk', 'dv'), (out,) + grads):
          assert np.isfinite(np.asarray(x)).all(), f'{name} not finite, {where}'
        assert _rel(out, want_out) <= value_tol, f'out: {_rel(out, want_out):.2e}, {where}'
        for name, g, w in zip(('dq', 'dk', 'dv'), grads, want_grads):
          assert _rel(g, w) <= grad_tol, f'{name}: {_rel(g, w):.2e}, {where}'


def test_spreads_reach_the_exact_path():
  """The key spreads above really make the factorised chunk form fail: its own
  denominators underflow below e^-40 (so 'chunked' must and does fall back)."""
  from linformer_jax.attention import common, linear  # pylint: disable=g-import-not-at-top
  for spread_name in ('keys x30', 'a +50 outlier'):
    (q, k, v), mask, _, _ = _data(jnp.float32, SPREADS[spread_name])
    w = mask[:, :, None, None].astype(jnp.float32)
    chunks = (common.to_chunks(jax.nn.softmax(q, axis=-1), 8),
              common.to_chunks(jnp.where(w > 0, k, common.NEG), 8, constant_values=common.NEG),
              common.to_chunks(w * jnp.ones_like(k[..., :1]), 8), common.to_chunks(v, 8))
    empty = linear.decode_init(B, H, D, DV, dtype=jnp.float32)
    out, den = linear._chunked(common.numerics(q, precision=HIGHEST), *chunks,
                               (empty['m'], empty['z'], empty['s']))
    assert jnp.min(jnp.where(chunks[2] > 0, den, 1.0)) < common.TINY, spread_name
    exact = lj.linear_attention(q, k, v, key_mask=mask, causal=True, chunk_size=8,
                                implementation='scan', precision=HIGHEST)
    assert _rel(common.from_chunks(out, N) * mask[:, :, None, None],
                exact * mask[:, :, None, None]) > 1e-3, spread_name


@pytest.mark.parametrize('impl', ['chunked', 'scan'])
def test_issue_repro_key_gradients_finite_off_cpu_path(impl):
  """The reported failure: float32, n = 256, d = 32, keys x30, the path GPUs run."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 256, 2, 32)), jnp.float32) for _ in range(3))
  k = 30 * k
  loss = lambda k: jnp.sum(lj.linear_attention(q, k, v, causal=True, implementation=impl,
                                               precision=HIGHEST) ** 2)
  dk = jax.jit(jax.grad(loss))(k)
  assert np.isfinite(np.asarray(dk)).all()
  with jax.enable_x64(True):
    want = jax.grad(lambda k: jnp.sum(naive.linear(q.astype(jnp.float64), k, v.astype(jnp.float64),
                                                   causal=True) ** 2))(k.astype(jnp.float64))
  assert _rel(dk, want) <= 1e-4


@pytest.mark.parametrize('impl', ['chunked', 'scan'])
def test_vmap_with_one_example_needing_the_exact_path(impl):
  """Under vmap the underflow test is batched, so lax.cond becomes a select that
  runs both branches; the discarded one must not leak NaN into gradients."""
  (q, k, v), mask, _, cot = _data(jnp.float32, SPREADS['keys x1'])
  k = k.at[0].multiply(30.0)  # example 0 needs the exact path, example 1 does not
  fn = lambda q, k, v, m: lj.linear_attention(q[None], k[None], v[None], key_mask=m[None],
                                              causal=True, chunk_size=8, implementation=impl,
                                              precision=HIGHEST)[0]
  loss = lambda q, k, v: jnp.sum(jax.vmap(fn)(q, k, v, mask) * cot)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  with jax.enable_x64(True):
    f64 = lambda x: jnp.asarray(x, jnp.float64)
    want = jax.grad(lambda q, k, v: jnp.sum(naive.linear(q, k, v, mask, True) * f64(cot)),
                    argnums=(0, 1, 2))(f64(q), f64(k), f64(v))
  for name, g, w in zip('qkv', grads, want):
    assert np.isfinite(np.asarray(g)).all(), name
    assert _rel(g, w) <= 1e-4, f'd{name}: {_rel(g, w):.2e}'


@pytest.mark.parametrize('causal', [False, True])
def test_blocked_softmax_over_several_blocks(causal):
  """'blocked' with blocks of 1, 8 and 16 queries (N = 37: the last block padded)
  equals the float64 reference, values and gradients, keys x30 and padding."""
  with jax.enable_x64(True):
    want_fn = _reference('softmax', causal)
    qkv, mask, ef, cot = _data(jnp.float64, SPREADS['keys x30'])
    want_out, want_grads = want_fn(*qkv, mask, *ef, cot)
    for block_size in (1, 8, 16):
      got_fn = _out_and_grads(lambda q, k, v, mask, e, f: lj.softmax_attention(
          q, k, v, key_mask=mask, causal=causal, implementation='blocked', precision=HIGHEST,
          block_size=block_size))
      out, grads = got_fn(*qkv, mask, *ef, cot)
      for name, g, w in zip(('out', 'dq', 'dk', 'dv'), (out,) + grads, (want_out,) + want_grads):
        assert _rel(g, w) <= 1e-10, f'{name}: {_rel(g, w):.2e}, block_size={block_size}'


def _temp_bytes(fn, *shapes):
  args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize('implementation', ['blocked', None])
def test_blocked_softmax_never_holds_the_score_matrix(implementation):
  """Forward and backward at n = 4096 (CPU's default is 'blocked' there) hold
  less than one n×n float32 score matrix (a few blocks of 512 × n); 'xla' holds
  several."""
  from linformer_jax.attention import softmax  # pylint: disable=g-import-not-at-top
  n = 4096
  assert n * n >= softmax.BLOCKED_FROM
  shape = (1, n, 1, 16)
  def grads(impl):
    loss = lambda q, k, v: jnp.sum(lj.softmax_attention(q, k, v, causal=True,
                                                        implementation=impl) ** 2)
    return jax.grad(loss, argnums=(0, 1, 2))
  scores = n * n * 4
  assert _temp_bytes(grads('xla'), shape, shape, shape) >= 2 * scores
  assert _temp_bytes(grads(implementation), shape, shape, shape) < scores


def _matmul_work(jaxpr):
  """Multiply-adds of the dot_generals in a jaxpr and its sub-jaxprs: a scan's body
  times its length, any other sub-jaxpr once."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      contract = eqn.params['dimension_numbers'][0][0]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
    times = eqn.params['length'] if eqn.primitive.name == 'scan' else 1
    total += times * sum(_matmul_work(inner) for inner in _sub_jaxprs(eqn))
  return total


@pytest.mark.parametrize('n', [8192, 16384])
def test_causal_blocked_softmax_scores_only_up_to_each_run(n):
  """16 or 32 blocks of 512 queries in CAUSAL_RUNS = 8 equal runs, each scoring
  the keys up to its own end: (1 + ... + 8) / 64 = 9/16 of the non-causal matmul
  work (2·n²·d multiply-adds forward), forward and backward."""
  from linformer_jax.attention import softmax  # pylint: disable=g-import-not-at-top
  assert softmax.CAUSAL_RUNS == 8 and n // 512 >= 16
  d = 16
  shape = jax.ShapeDtypeStruct((1, n, 1, d), jnp.float32)
  def work(causal, grad):
    fn = lambda q, k, v: jnp.sum(lj.softmax_attention(q, k, v, causal=causal, block_size=512,
                                                      implementation='blocked') ** 2)
    fn = jax.grad(fn, argnums=(0, 1, 2)) if grad else fn
    return _matmul_work(jax.make_jaxpr(fn)(shape, shape, shape).jaxpr)
  assert work(False, False) == 2 * n * n * d
  for grad in (False, True):
    assert work(True, grad) * 16 == work(False, grad) * 9, grad


# The paper's kernel in the fast suite; every other kind's bf16 check in the whole suite.
@pytest.mark.parametrize('kind,causal,impl', [
    pytest.param(*path, marks=[] if path[0] == 'linear' else [pytest.mark.slow]) for path in _paths()])
def test_bfloat16_error_against_float64(kind, causal, impl):
  """bf16 inputs (bf16 matmul operands, float32 sums): max-norm relative error
  <= 2e-2 against float64, as the README states for every kernel."""
  (q, k, v), mask, (e, f), _ = _data(jnp.float32, SPREADS['keys x1'])
  bf = lambda x: x.astype(jnp.bfloat16)
  got = lj.attend(kind, bf(q), bf(k), bf(v), key_mask=mask, causal=causal, chunk_size=8,
                  projections=(e, f) if lj.TABLE[kind].needs_projections else None, implementation=impl,
                  window=_window(kind))
  assert got.dtype == jnp.bfloat16
  with jax.enable_x64(True):
    f64 = lambda x: bf(x).astype(jnp.float64)
    want = _naive(kind, causal)(f64(q), f64(k), f64(v), mask, f64(e), f64(f))
  assert _rel(got, want) <= 2e-2


@pytest.mark.parametrize('bad,match', [
    (dict(kind='linear', causal=True, implementation='pallas_v9'), r"no implementation 'pallas_v9'"),
    (dict(kind='softmax', implementation='scan'), r"no implementation 'scan'; valid: None .* \('xla', 'blocked', 'jax'\)"),
    (dict(kind='linformer', causal=True), 'no causal form'),
])
def test_attend_rejects_unknown_implementations(bad, match):
  (q, k, v), mask, (e, f), _ = _data(jnp.float32, SPREADS['keys x1'])
  kind = bad.pop('kind')
  with pytest.raises(ValueError, match=match):
    lj.attend(kind, q, k, v, projections=(e, f) if lj.TABLE[kind].needs_projections else None, **bad)


def test_kernels_reject_unknown_implementations():
  (q, k, v), _, _, _ = _data(jnp.float32, SPREADS['keys x1'])
  with pytest.raises(ValueError, match=r"unknown implementation 'fast'; valid: None .* \('scan', 'chunked', 'pallas'\)"):
    lj.linear_attention(q, k, v, causal=True, implementation='fast')


def test_pallas_refuses_float64():
  with jax.enable_x64(True):
    (q, k, v), _, _, _ = _data(jnp.float64, SPREADS['keys x1'])
    with pytest.raises(ValueError, match="'pallas' computes in float32 .* use 'scan' or 'chunked'"):
      lj.linear_attention(q, k, v, causal=True, implementation='pallas')


# Pallas interpret mode is slow: its case runs in the whole suite (test_pallas_linear
# keeps a fast initial-state test of the kernel).
@pytest.mark.parametrize('kind,impl', [
    pytest.param(k, i, marks=[pytest.mark.slow] if i == 'pallas' else [])
    for k, c, i in _paths() if c and lj.TABLE[k].takes_initial_state])
def test_initial_state_continues_a_sequence_exactly(kind, impl):
  """The second half from the first half's state (causal_state) equals the whole
  sequence's second half, values and gradients through the state included."""
  cut = 20

  def whole(q, k, v, mask):
    return lj.attend(kind, q, k, v, key_mask=mask, causal=True, chunk_size=8, implementation=impl,
                     precision=HIGHEST)[:, cut:]

  def halves(q, k, v, mask):
    state = lj.causal_state(kind, k[:, :cut], v[:, :cut], key_mask=mask[:, :cut], precision=HIGHEST)
    return lj.attend(kind, q[:, cut:], k[:, cut:], v[:, cut:], key_mask=mask[:, cut:], causal=True,
                     chunk_size=8, implementation=impl, precision=HIGHEST, initial_state=state)

  whole_fn = _out_and_grads(lambda q, k, v, mask, e, f: whole(q, k, v, mask))
  halves_fn = _out_and_grads(lambda q, k, v, mask, e, f: halves(q, k, v, mask))
  for spread in ('keys x1', 'a +50 outlier'):
    (q, k, v), mask, (e, f), cot = _data(jnp.float32, SPREADS[spread])
    want, want_grads = whole_fn(q, k, v, mask, e, f, cot[:, cut:])
    got, got_grads = halves_fn(q, k, v, mask, e, f, cot[:, cut:])
    assert _rel(got, want) <= 1e-5, spread
    for name, g, w in zip('qkv', got_grads, want_grads):
      assert np.isfinite(np.asarray(g)).all()
      assert _rel(g, w) <= 1e-4, f'd{name}, {spread}: {_rel(g, w):.2e}'


def test_initial_state_refused_where_a_kind_cannot_start_from_one():
  (q, k, v), _, _, _ = _data(jnp.float32, SPREADS['keys x1'])
  state = lj.causal_state('linear', k, v)
  with pytest.raises(ValueError, match=r"initial_state is for causal attention of the kinds "
                                       r"\('linear', 'elu_linear'\); got 'softmax' with causal=True"):
    lj.attend('softmax', q, k, v, causal=True, initial_state=state)
  with pytest.raises(ValueError, match="got 'linear' with causal=False"):
    lj.attend('linear', q, k, v, initial_state=state)
