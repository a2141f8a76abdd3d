"""Kernels against explicit O(n²) numpy materialisations, plus the properties they promise."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import linformer_jax as lj

RNG = np.random.default_rng(0)


def _qkv(b=2, n=37, h=3, d=8, dv=5, scale=1.0):
  q = RNG.normal(size=(b, n, h, d)).astype(np.float32)
  k = (scale * RNG.normal(size=(b, n, h, d))).astype(np.float32)
  v = RNG.normal(size=(b, n, h, dv)).astype(np.float32)
  return q, k, v


def _key_mask(b=2, n=37):
  m = RNG.random((b, n)) > 0.3
  m[-1, :] = False
  m[-1, 5] = True  # the last example has a single real key, at position 5
  return m


def _allowed(mask, causal, b, n):
  """allowed[b, i, j]: may query i look at key j."""
  allowed = np.ones((b, n, n), bool)
  if mask is not None:
    allowed &= mask[:, None, :]
  if causal:
    allowed &= np.tril(np.ones((n, n), bool))[None]
  return allowed


def _softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=axis, keepdims=True)


# --- numpy references: every attention written as its explicit [n, n] matrix ---

def ref_linear_matrix(q, k, mask, causal):
  """P[b, h, i, j] = sum_f softmax_feat(q_i)_f softmax_seq(k over allowed j)_jf."""
  q, k = q.astype(np.float64), k.astype(np.float64)
  b, n, h, _ = q.shape
  qs = _softmax(q, -1)
  allowed = _allowed(mask, causal, b, n)
  p = np.zeros((b, h, n, n))
  for bi in range(b):
    for hi in range(h):
      for i in range(n):
        js = np.flatnonzero(allowed[bi, i])
        if js.size:
          p[bi, hi, i, js] = _softmax(k[bi, js, hi], 0) @ qs[bi, i, hi]
  return p


def ref_elu_matrix(q, k, mask, causal):
  q, k = q.astype(np.float64), k.astype(np.float64)
  phi = lambda x: np.where(x > 0, x + 1, np.exp(x))
  s = np.einsum('bihd,bjhd->bhij', phi(q), phi(k))
  s = s * _allowed(mask, causal, q.shape[0], q.shape[1])[:, None]
  den = s.sum(-1, keepdims=True)
  return np.divide(s, den, out=np.zeros_like(s), where=den > 0)


def ref_softmax_matrix(q, k, mask, causal):
  q, k = q.astype(np.float64), k.astype(np.float64)
  s = np.einsum('bihd,bjhd->bhij', q, k) / math.sqrt(q.shape[-1])
  allowed = _allowed(mask, causal, q.shape[0], q.shape[1])[:, None]
  s = np.where(allowed, s, -np.inf)
  p = np.exp(s - np.max(np.where(allowed, s, -1e300), -1, keepdims=True))
  den = p.sum(-1, keepdims=True)
  return np.divide(p, den, out=np.zeros_like(p), where=den > 0)


def apply_matrix(p, v):
  return np.einsum('bhij,bjhe->bihe', p, v.astype(np.float64))


REFS = {
    'linear': (lj.linear_attention, ref_linear_matrix),
    'elu_linear': (lj.elu_linear_attention, ref_elu_matrix),
    'softmax': (lj.softmax_attention, ref_softmax_matrix),
}


@pytest.mark.parametrize('kind', sorted(REFS))
@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('masked', [False, True])
def test_kernel_matches_explicit_matrix(kind, causal, masked):
  q, k, v = _qkv()
  mask = _key_mask() if masked else None
  fn, ref = REFS[kind]
  want = apply_matrix(ref(q, k, mask, causal), v)
  # n = 37 is not a multiple of any chunk size below.
  for chunk_size in ([1, 8, 64] if kind != 'softmax' else [None]):
    kwargs = {} if chunk_size is None else {'chunk_size': chunk_size}
    got = fn(q, k, v, key_mask=mask, causal=causal, **kwargs)
    assert got.shape == v.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5, err_msg=f'chunk_size={chunk_size}')


def test_linformer_matches_explicit_projection():
  q, k, v = _qkv(n=20)
  mask = _key_mask(n=20)
  e = RNG.normal(size=(6, 32)).astype(np.float32)
  f = RNG.normal(size=(3, 6, 32)).astype(np.float32)  # per-head F
  kz, vz = k * mask[:, :, None, None], v * mask[:, :, None, None]
  kp = np.einsum('rn,bnhd->brhd', e[:, :20], kz)
  vp = np.einsum('hrn,bnhd->brhd', f[:, :, :20], vz)
  p = _softmax(np.einsum('bihd,brhd->bhir', q, kp) / math.sqrt(8), -1)
  want = np.einsum('bhir,brhe->bihe', p, vp)
  got = lj.linformer_attention(q, k, v, e, f, key_mask=mask)
  # The example with one real key is still defined; only an all-masked example is zeroed.
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_linformer_with_identity_projections_is_softmax():
  q, k, v = _qkv(n=16)
  eye = np.eye(16, dtype=np.float32)
  np.testing.assert_allclose(lj.linformer_attention(q, k, v, eye, eye), lj.softmax_attention(q, k, v),
                             atol=1e-6, rtol=1e-5)


def test_linformer_length_check_and_shorter_inputs():
  q, k, v = _qkv(n=16)
  e = RNG.normal(size=(4, 12)).astype(np.float32)
  with pytest.raises(ValueError, match='sequence length 16 exceeds .* max_len 12'):
    lj.linformer_attention(q, k, v, e, e)
  long_e = np.concatenate([e, RNG.normal(size=(4, 20)).astype(np.float32)], axis=1)
  np.testing.assert_allclose(lj.linformer_attention(q[:, :12], k[:, :12], v[:, :12], e, e),
                             lj.linformer_attention(q[:, :12], k[:, :12], v[:, :12], long_e, long_e))


def test_all_masked_queries_get_zeros_not_nan():
  q, k, v = _qkv(n=12)
  mask = np.zeros((2, 12), bool)
  mask[0, 3:] = True
  e = RNG.normal(size=(4, 12)).astype(np.float32)
  for name, fn in [('linear', lj.linear_attention), ('elu', lj.elu_linear_attention),
                   ('softmax', lj.softmax_attention),
                   ('linformer', lambda *a, **kw: lj.linformer_attention(*a, e, e, **kw))]:
    for causal in ([False, True] if name != 'linformer' else [False]):
      out = np.asarray(fn(q, k, v, key_mask=mask, **({'causal': True} if causal else {})))
      assert np.isfinite(out).all(), name
      assert (out[1] == 0).all(), name  # no real key at all
      if causal:
        assert (out[0, :3] == 0).all(), name  # no real key at or before these positions
        assert (np.abs(out[0, 3:]).sum(-1) > 0).all(), name


@pytest.mark.parametrize('causal', [False, True])
def test_linear_attention_matrix_is_row_stochastic(causal):
  q, k, _ = _qkv()
  mask = _key_mask()
  mask[-1, 0] = True  # every query has at least one allowed key
  p = ref_linear_matrix(q, k, mask, causal)
  assert (p >= 0).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
  # The kernel applies exactly this matrix: feeding V = I recovers P's rows.
  n = q.shape[1]
  eye_v = np.broadcast_to(np.eye(n, dtype=np.float32)[None, :, None, :], (2, n, 3, n))
  got = lj.linear_attention(q, k, eye_v, key_mask=mask, causal=causal, chunk_size=8)
  np.testing.assert_allclose(np.einsum('bihj->bhij', got), p, atol=2e-6)


@pytest.mark.parametrize('kind', ['linear', 'elu_linear', 'softmax'])
def test_padded_keys_and_values_have_no_influence(kind):
  fn = REFS[kind][0]
  q, k, v = _qkv()
  mask = _key_mask()
  k2, v2 = k.copy(), v.copy()
  k2[~mask] = 1e3 * RNG.normal(size=k2[~mask].shape)
  v2[~mask] = 1e3 * RNG.normal(size=v2[~mask].shape)
  for causal in [False, True]:
    np.testing.assert_array_equal(fn(q, k, v, key_mask=mask, causal=causal),
                                  fn(q, k2, v2, key_mask=mask, causal=causal))


def test_linformer_padding_has_no_influence():
  q, k, v = _qkv()
  mask = _key_mask()
  e = RNG.normal(size=(5, 40)).astype(np.float32)
  k2, v2 = k.copy(), v.copy()
  k2[~mask], v2[~mask] = 1e3, -1e3
  np.testing.assert_array_equal(lj.linformer_attention(q, k, v, e, e, key_mask=mask),
                                lj.linformer_attention(q, k2, v2, e, e, key_mask=mask))


@pytest.mark.parametrize('fn', [lj.linear_attention, lj.elu_linear_attention, lj.softmax_attention])
def test_causal_outputs_ignore_the_future(fn):
  q, k, v = _qkv(n=40)
  base = np.asarray(fn(q, k, v, causal=True))
  for i in [0, 7, 8, 23, 38]:
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    for x in (q2, k2, v2):
      x[:, i + 1:] = 50 * RNG.normal(size=x[:, i + 1:].shape)
    out = np.asarray(fn(q2, k2, v2, causal=True))
    # Equal up to float rounding: the chunk's shared max shift may change.
    np.testing.assert_allclose(out[:, :i + 1], base[:, :i + 1], atol=1e-6, rtol=1e-6)
    assert not np.allclose(out[:, i + 1:], base[:, i + 1:])


@pytest.mark.parametrize('causal', [False, True])
def test_linear_attention_huge_keys_are_finite_and_correct(causal):
  q, k, v = _qkv(scale=1e4)
  mask = _key_mask()
  want = apply_matrix(ref_linear_matrix(q, k, mask, causal), v)
  got = np.asarray(lj.linear_attention(q, k, v, key_mask=mask, causal=causal, chunk_size=8))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5)


def test_causal_later_keys_dwarfing_earlier_ones():
  q, k, v = _qkv(n=48)
  k[:, 20:] += 500.0  # within one chunk (16..31), later keys are e^500 times larger
  k[:, 40:] -= 1000.0  # and then far smaller again
  want = apply_matrix(ref_linear_matrix(q, k, None, True), v)
  for chunk_size in [16, 48]:
    got = np.asarray(lj.linear_attention(q, k, v, causal=True, chunk_size=chunk_size))
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize('fn', [lj.linear_attention, lj.elu_linear_attention, lj.softmax_attention])
@pytest.mark.parametrize('causal', [False, True])
def test_bfloat16_in_bfloat16_out(fn, causal):
  q, k, v = _qkv()
  mask = _key_mask()
  got = fn(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), key_mask=mask, causal=causal)
  assert got.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(got, np.float32)).all()
  want = fn(*(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32) for x in (q, k, v)),
            key_mask=mask, causal=causal)
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2, rtol=3e-2)


def test_linear_attention_bfloat16_huge_keys_finite():
  q, k, v = _qkv(scale=1e4)
  for causal in [False, True]:
    got = lj.linear_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), causal=causal)
    assert got.dtype == jnp.bfloat16 and np.isfinite(np.asarray(got, np.float32)).all()


def test_jit_and_vmap_agree_with_eager():
  q, k, v = _qkv()
  mask = _key_mask()
  for fn, causal in [(lj.linear_attention, True), (lj.elu_linear_attention, False)]:
    eager = fn(q, k, v, key_mask=mask, causal=causal, chunk_size=8)
    jitted = jax.jit(lambda q, k, v, m: fn(q, k, v, key_mask=m, causal=causal, chunk_size=8))(
        q, k, v, mask)
    # vmap over the batch axis of single-example calls.
    single = lambda q, k, v, m: fn(q[None], k[None], v[None], key_mask=m[None], causal=causal,
                                   chunk_size=8)[0]
    mapped = jax.vmap(single)(q, k, v, mask)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    np.testing.assert_allclose(mapped, eager, atol=1e-6)


@pytest.mark.parametrize('kind', ['softmax', 'linformer', 'linear', 'elu_linear'])
@pytest.mark.parametrize('causal', [False, True])
def test_gradients_match_finite_differences(kind, causal):
  if kind == 'linformer' and causal:
    pytest.skip('linformer has no causal form')
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 11, 2, 4))) for _ in range(3))
    mask = jnp.asarray(np.arange(11)[None] < 9)
    if kind == 'linformer':
      e, f = (jnp.asarray(rng.normal(size=(3, 16)) / 4) for _ in range(2))
      fn = lambda q, k, v, e, f: lj.linformer_attention(q, k, v, e, f, key_mask=mask)
      args = (q, k, v, e, f)
    else:
      kw = {} if kind == 'softmax' else {'chunk_size': 4}
      fn = lambda q, k, v: REFS[kind][0](q, k, v, key_mask=mask, causal=causal, **kw)
      args = (q, k, v)
    assert fn(*args).dtype == jnp.float64
    check_grads(fn, args, order=1, modes=['rev'], atol=1e-6, rtol=1e-6)


# --- Linear cost, made visible in the jaxpr ---

def _sub_jaxprs(eqn):
  """The jaxprs nested in one equation's parameters (scan, cond, pjit and checkpoint bodies)."""
  for param in eqn.params.values():
    for sub in (param if isinstance(param, (tuple, list)) else [param]):
      inner = getattr(sub, 'jaxpr', sub)
      if hasattr(inner, 'eqns'):
        yield inner


def _largest_intermediate(jaxpr):
  """Largest number of elements of any value produced anywhere in a jaxpr (sub-jaxprs too)."""
  biggest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      biggest = max(biggest, math.prod(getattr(var.aval, 'shape', ())))
    for inner in _sub_jaxprs(eqn):
      biggest = max(biggest, _largest_intermediate(inner))
  return biggest


def _jaxprs(fn, n, h=2, d=16):
  x = jax.ShapeDtypeStruct((1, n, h, d), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, n), jnp.bool_)
  forward = jax.make_jaxpr(fn)(x, x, x, mask)
  grad = jax.make_jaxpr(jax.grad(lambda q, k, v, m: fn(q, k, v, m).sum(), argnums=(0, 1, 2)))(
      x, x, x, mask)
  return forward.jaxpr, grad.jaxpr


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('kind', ['linear', 'elu_linear'])
def test_no_quadratic_array_in_jaxpr(kind, causal):
  n, h, d = 16384, 2, 16
  fn = lambda q, k, v, m: REFS[kind][0](q, k, v, key_mask=m, causal=causal)
  for jaxpr in _jaxprs(fn, n, h, d):
    # A handful of [n, h, d]-sized arrays is linear; n×n would be 16384 / 32 = 512 times more.
    assert _largest_intermediate(jaxpr) <= 4 * n * h * d


def test_jaxpr_walker_sees_quadratic_arrays():
  # The walker above must catch an n×n array when there is one.
  n, h, d = 512, 2, 16
  fn = lambda q, k, v, m: lj.softmax_attention(q, k, v, key_mask=m)
  for jaxpr in _jaxprs(fn, n, h, d):
    assert _largest_intermediate(jaxpr) >= h * n * n


# --- Causal gradients against an explicit float64 n×n reference ---

def _ref_causal_linear_jnp(q, k, v, mask):
  """The causal formula written out with [b, h, i, j, f] weights, in jnp (differentiable).

  out_i = sum_f softmax_feat(q_i)_f · sum_{j<=i, real} softmax_j(k_jf) v_j
  """
  n = q.shape[1]
  allowed = jnp.tril(jnp.ones((n, n), bool))[None] & mask[:, None, :]  # [b, i, j]
  logits = jnp.where(allowed[:, None, :, :, None],
                     jnp.einsum('bjhf->bhjf', k)[:, :, None], -1e300)  # [b, h, i, j, f]
  weights = jax.nn.softmax(logits, axis=3)
  weights = jnp.where(allowed.any(-1)[:, None, :, None, None], weights, 0.0)
  qs = jax.nn.softmax(q, axis=-1)
  return jnp.einsum('bihf,bhijf,bjhe->bihe', qs, weights, v)


def test_causal_gradient_at_the_running_max_key():
  # The key that is a position's running max used to get half its gradient.
  with jax.enable_x64(True):
    k = jnp.array([0.0, 0, 0, 50]).reshape(1, 4, 1, 1)
    q = jnp.zeros((1, 4, 1, 1))
    v = jnp.arange(1.0, 5.0).reshape(1, 4, 1, 1)
    ref = jax.grad(lambda k: _ref_causal_linear_jnp(q, k, v, jnp.ones((1, 4), bool)).sum())(k)
    for chunk_size in [1, 2, 4]:
      got = jax.grad(lambda k: lj.linear_attention(q, k, v, causal=True, chunk_size=chunk_size).sum())(k)
      np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14, err_msg=f'chunk_size={chunk_size}')
    np.testing.assert_allclose(np.ravel(ref), [-7 / 12, 1 / 4, 1 / 3, 0], rtol=1e-12)


# Every implementation of every kind, float32 and float64, values and gradients at
# key spreads that need the exact path: tests/test_kernel_paths.py.


# --- Edge inputs and the entry point by name ---

@pytest.mark.parametrize('kind', lj.KINDS)
@pytest.mark.parametrize('q_len,kv_len', [(0, 0), (0, 5), (5, 0)])
def test_empty_sequences_give_empty_or_zero_outputs(kind, q_len, kv_len):
  causal = q_len == kv_len and kind != 'linformer'
  q = jnp.ones((2, q_len, 3, 4), jnp.bfloat16)
  k = jnp.ones((2, kv_len, 3, 4), jnp.bfloat16)
  v = jnp.ones((2, kv_len, 3, 5), jnp.bfloat16)
  proj = (jnp.ones((2, 8)),) * 2 if kind == 'linformer' else None
  out = lj.attend(kind, q, k, v, causal=causal, projections=proj)
  assert out.shape == (2, q_len, 3, 5) and out.dtype == jnp.bfloat16
  assert (np.asarray(out, np.float32) == 0).all()


def test_chunk_size_accepts_numpy_ints_and_rejects_bools():
  q, k, v = _qkv(n=9)
  want = lj.linear_attention(q, k, v, causal=True, chunk_size=4)
  np.testing.assert_array_equal(lj.linear_attention(q, k, v, causal=True, chunk_size=np.int64(4)), want)
  for bad in [True, np.bool_(True), 0, -2, 2.0]:
    with pytest.raises(ValueError, match=f'chunk_size must be a positive int, got {bad!r}'):
      lj.linear_attention(q, k, v, causal=True, chunk_size=bad)


def test_linformer_projections_must_agree_on_k():
  q, k, v = _qkv(n=8)
  with pytest.raises(ValueError, match=r'same number of rows k; got k = 4 .* and k = 6'):
    lj.linformer_attention(q, k, v, np.ones((4, 8), np.float32), np.ones((3, 6, 8), np.float32))


def test_attend_dispatches_by_name_and_rejects_bad_calls():
  q, k, v = _qkv(n=10)
  mask = _key_mask(n=10)
  e = RNG.normal(size=(4, 10)).astype(np.float32)
  np.testing.assert_array_equal(lj.attend('linformer', q, k, v, key_mask=mask, projections=(e, e)),
                                lj.linformer_attention(q, k, v, e, e, key_mask=mask))
  for kind, (fn, _) in REFS.items():
    np.testing.assert_array_equal(lj.attend(kind, q, k, v, key_mask=mask, causal=True, chunk_size=4),
                                  fn(q, k, v, key_mask=mask, causal=True,
                                     **({} if kind == 'softmax' else {'chunk_size': 4})))
  with pytest.raises(ValueError, match="unknown attention kind 'performer'; valid: "):
    lj.attend('performer', q, k, v)
  with pytest.raises(ValueError, match='no causal form'):
    lj.attend('linformer', q, k, v, causal=True, projections=(e, e))
  with pytest.raises(ValueError, match=r'needs projections=\(e_proj, f_proj\)'):
    lj.attend('linformer', q, k, v)
  with pytest.raises(ValueError, match="for linformer attention only, not 'linear'"):
    lj.attend('linear', q, k, v, projections=(e, e))
