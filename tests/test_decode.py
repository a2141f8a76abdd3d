"""Recurrent decoding: token-by-token steps against the parallel causal kernels and a float64 reference."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linformer_jax as lj

RNG = np.random.default_rng(0)
B, N, H, D, DV = 2, 21, 2, 4, 3


def _inputs(scale=1.0):
  q, k = RNG.normal(size=(2, B, N, H, D)).astype(np.float32)
  v = RNG.normal(size=(B, N, H, DV)).astype(np.float32)
  mask = RNG.random((B, N)) > 0.3
  mask[1, :3] = False  # leading padding: no real key yet
  return q, (scale * k).astype(np.float32), v, mask


def _decode_all(kind, q, k, v, mask, state=None, start=0):
  """Outputs [b, n - start, h, dv] and the final state of steps start..n-1, under lax.scan."""
  if state is None:
    state = lj.decode_init(kind, q.shape[0], q.shape[2], q.shape[3], v.shape[3], max_len=q.shape[1])
  xs = tuple(jnp.moveaxis(jnp.asarray(x)[:, start:], 1, 0) for x in (q, k, v, mask))

  def step(state, x):
    qi, ki, vi, mi = x
    out, state = lj.decode_step(kind, state, qi, ki, vi, key_mask=mi)
    return state, out

  state, outs = jax.jit(lambda s, xs: jax.lax.scan(step, s, xs))(state, xs)
  return jnp.moveaxis(outs, 0, 1), state


def _parallel(kind, q, k, v, mask):
  return lj.attend(kind, q, k, v, key_mask=mask, causal=True, chunk_size=8)


@pytest.mark.parametrize('kind', lj.DECODE_KINDS)
@pytest.mark.parametrize('scale', [1.0, 1e3])
def test_decode_equals_parallel_causal_kernel(kind, scale):
  q, k, v, mask = _inputs(scale)
  if scale > 1 and kind != 'linear':
    q = q / scale  # elu and softmax have no max shift over keys x queries of 1e3 (scores 1e6)
  got, _ = _decode_all(kind, q, k, v, mask)
  want = _parallel(kind, q, k, v, mask)
  assert got.shape == want.shape and got.dtype == jnp.float32 and np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5)
  assert (np.asarray(got)[1, :3] == 0).all()  # no real key at or before these positions


def test_linear_decode_later_keys_dwarfing_earlier_ones():
  q, k, v, mask = _inputs()
  k[:, 8:] += 500.0
  k[:, 15:] -= 1000.0
  got, state = _decode_all('linear', q, k, v, mask)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
  np.testing.assert_allclose(got, _parallel('linear', q, k, v, mask), atol=2e-6, rtol=2e-5)


def _ref_steps_linear(q, k, v, mask):
  """float64, one position at a time, straight from the causal formula (no shifts kept)."""
  q, k, v = (x.astype(np.float64) for x in (q, k, v))
  out = np.zeros(v.shape)
  for bi in range(q.shape[0]):
    for i in range(q.shape[1]):
      js = np.flatnonzero(mask[bi, :i + 1])
      if not js.size:
        continue
      for hi in range(q.shape[2]):
        qs = np.exp(q[bi, i, hi] - q[bi, i, hi].max())
        qs /= qs.sum()
        kj = k[bi, js, hi]  # [j, d]
        wts = np.exp(kj - kj.max(0))
        wts /= wts.sum(0)  # softmax over j, per feature
        out[bi, i, hi] = qs @ (wts.T @ v[bi, js, hi])
  return out


def test_linear_decode_matches_float64_step_reference():
  q, k, v, mask = _inputs(scale=30.0)
  got, _ = _decode_all('linear', q, k, v, mask)
  np.testing.assert_allclose(got, _ref_steps_linear(q, k, v, mask), atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize('kind', lj.DECODE_KINDS)
def test_prefill_state_then_steps_equals_all_steps(kind):
  q, k, v, mask = _inputs(scale=1e3 if kind == 'linear' else 1.0)
  all_out, all_state = _decode_all(kind, q, k, v, mask)
  split = 13
  state = lj.causal_state(kind, k[:, :split], v[:, :split], key_mask=mask[:, :split], max_len=N)
  for name in all_state:
    assert state[name].shape == all_state[name].shape and state[name].dtype == all_state[name].dtype
  _, steps_state = _decode_all(kind, q[:, :split], k[:, :split], v[:, :split], mask[:, :split],
                               state=lj.decode_init(kind, B, H, D, DV, max_len=N))
  for name in state:
    np.testing.assert_allclose(state[name], steps_state[name], atol=1e-6, rtol=1e-5, err_msg=name)
  rest, _ = _decode_all(kind, q, k, v, mask, state=state, start=split)
  np.testing.assert_allclose(rest, all_out[:, split:], atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize('kind', lj.DECODE_KINDS)
def test_bfloat16_inputs(kind):
  q, k, v, mask = _inputs()
  as_bf16 = lambda x: jnp.asarray(x, jnp.bfloat16)
  got, state = _decode_all(kind, as_bf16(q), as_bf16(k), as_bf16(v), mask)
  assert got.dtype == jnp.bfloat16 and all(x.dtype in (jnp.float32, jnp.int32, jnp.bool_)
                                           for x in jax.tree.leaves(state))
  want, _ = _decode_all(kind, *(as_bf16(x).astype(jnp.float32) for x in (q, k, v)), mask)
  got = np.asarray(got, np.float32)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)


def test_softmax_cache_overflow_is_nan_and_bad_kinds_raise():
  state = lj.decode_init('softmax', 1, 1, 2, 2, max_len=2)
  x = jnp.ones((1, 1, 2))
  outs = []
  for _ in range(3):
    out, state = lj.decode_step('softmax', state, x, x, x)
    outs.append(np.asarray(out))
  assert np.isfinite(outs[1]).all() and np.isnan(outs[2]).all()
  with pytest.raises(ValueError, match="'linformer'.*valid"):
    lj.decode_init('linformer', 1, 1, 2, 2)
  with pytest.raises(ValueError, match='needs max_len'):
    lj.decode_init('softmax', 1, 1, 2, 2)
  with pytest.raises(ValueError, match='max_len must be an int >= n = 3'):
    lj.causal_state('softmax', jnp.ones((1, 3, 1, 2)), jnp.ones((1, 3, 1, 2)), max_len=2)
  with pytest.raises(ValueError, match=r'key_mask must be \[batch\]'):
    lj.decode_step('linear', lj.decode_init('linear', 1, 1, 2, 2), x, x, x, key_mask=jnp.ones((2,), bool))


def test_decode_step_compiles_once_per_shape():
  state = lj.decode_init('linear', 1, 2, 4, 3)
  step = jax.jit(functools.partial(lj.decode_step, 'linear'))
  q = jnp.ones((1, 2, 4))
  v = jnp.ones((1, 2, 3))
  for _ in range(3):
    _, state = step(state, q, q, v)
  assert step._cache_size() == 1
