"""The Pallas causal linear attention kernel, in interpret mode, against a float64 reference.

The reference is the paper's per-position formula written out directly (a loop
over query positions i, each normalised by its own prefix max), not the chunked
algorithm; its gradients come from JAX in float64.
"""
import contextlib

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax import lax

from linformer_jax.attention import pallas_linear

_NEG = -1e30


def _x64():
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


def _reference(qs, k, w, v):
  """out_i = sum_f qs_if (sum_{j<=i} w_j e^{k_jf} v_j) / (sum_{j<=i} w_j e^{k_jf}); 0 without keys.

  Every position i gets its own sums over its allowed keys j <= i, shifted by its
  own prefix max (an [i, j] mask, not chunks).
  """
  n = k.shape[1]
  causal = jnp.arange(n)[:, None] >= jnp.arange(n)[None, :]
  allowed = causal[None, :, :, None, None] & (w[:, None, :, None, None] > 0)  # [b, i, j, 1, 1]
  shifted = jnp.broadcast_to(k[:, None], allowed.shape[:3] + k.shape[2:])
  m = lax.stop_gradient(jnp.max(jnp.where(allowed, shifted, -jnp.inf), axis=2, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  e = jnp.where(allowed, jnp.exp(jnp.where(allowed, shifted - m, 0.0)), 0.0)  # [b, i, j, h, d]
  den = jnp.sum(e, axis=2)
  num = jnp.einsum('bijhd,bjhe->bihde', e, v)
  a = jnp.where(den[..., None] > 0, num / jnp.where(den > 0, den, 1.0)[..., None], 0.0)
  return jnp.einsum('bihd,bihde->bihe', qs, a)


def _inputs(seed, b=2, n=40, h=2, d=8, e=8, scale=1.0, dtype=jnp.float32, pad=None):
  rng = np.random.default_rng(seed)
  qs = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32), axis=-1)
  k = jnp.asarray(scale * rng.normal(size=(b, n, h, d)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, n, h, e)), jnp.float32)
  w = np.ones((b, n), np.float32)
  if pad is not None:
    w = pad(rng, w)
  w = jnp.asarray(w)
  k = jnp.where(w[:, :, None, None] > 0, k, _NEG)  # The caller's contract.
  g = jnp.asarray(rng.normal(size=(b, n, h, e)), jnp.float32)
  return qs.astype(dtype), k.astype(dtype), w, v.astype(dtype), g


def _rel(x, ref):
  x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
  return np.max(np.abs(x - ref)) / np.max(np.abs(ref))


def _kernel_vjp(qs, k, w, v, g, **kwargs):
  with jax.default_matmul_precision('float32'):
    (out, underflow), vjp = jax.vjp(
        lambda qs, k, v: pallas_linear.causal_linear(qs, k, w, v, interpret=True, **kwargs),
        qs, k, v)
    grads = vjp((g, np.zeros((), jax.dtypes.float0)))
  return out, underflow, grads


def _reference_vjp(qs, k, w, v, g):
  with _x64():
    args = [jnp.asarray(np.asarray(x, np.float32), jnp.float64) for x in (qs, k, w, v, g)]
    qs, k, w, v, g = args
    out, vjp = jax.vjp(lambda qs, k, v: jax.jit(_reference)(qs, k, w, v), qs, k, v)
    return np.asarray(out), [np.asarray(x) for x in vjp(g)]


def _check(inputs, chunk_size, value_tol=1e-5, grad_tol=1e-4, **kwargs):
  qs, k, w, v, g = inputs
  out, underflow, grads = _kernel_vjp(qs, k, w, v, g, chunk_size=chunk_size, **kwargs)
  ref_out, ref_grads = _reference_vjp(qs, k, w, v, g)
  assert not bool(underflow)
  assert out.dtype == jnp.float32 and out.shape == ref_out.shape
  assert _rel(out, ref_out) <= value_tol
  for name, grad, ref, x in zip(('qs', 'k', 'v'), grads, ref_grads, (qs, k, v)):
    assert grad.dtype == x.dtype and grad.shape == x.shape, name
    # Padded keys (k = -1e30) get a zero gradient from both.
    assert _rel(grad, ref) <= grad_tol, (name, _rel(grad, ref))


# The kernel's paths through linear_attention are in tests/test_kernel_paths.py's fast
# suite; here the fast suite keeps one case of each property, the rest are slow.
@pytest.mark.parametrize('scale,chunk_size,n,seed', [
    (1.0, 8, 32, 0), pytest.param(1.0, 16, 40, 1, marks=pytest.mark.slow),
    pytest.param(10.0, 8, 40, 2, marks=pytest.mark.slow)])
def test_matches_reference(scale, chunk_size, n, seed):
  _check(_inputs(seed, n=n, scale=scale), chunk_size)


def _pad_keys(rng, w):
  w = w * (rng.uniform(size=w.shape) > 0.3)
  w[1, :11] = 0.0  # A whole chunk, and part of the next, without a real key.
  return w


def test_padding_and_ragged_length():
  _check(_inputs(3, n=37, pad=_pad_keys), chunk_size=8)


@pytest.mark.slow
def test_feature_dims_are_padded():
  _check(_inputs(4, n=33, d=12, e=20, scale=3.0), chunk_size=16)


@pytest.mark.slow
def test_bfloat16_operands():
  _check(_inputs(5, n=40, dtype=jnp.bfloat16), chunk_size=16, value_tol=2e-2, grad_tol=2e-2)


def test_initial_state_continues_a_sequence():
  qs, k, w, v, g = _inputs(6, n=36, scale=2.0, pad=_pad_keys)
  half = 20  # Not a multiple of the chunk: each call pads its own tail.

  def whole(qs, k, v):
    out, _, state = pallas_linear.causal_linear(qs, k, w, v, chunk_size=8, interpret=True,
                                                return_state=True)
    return out, state

  def split(qs, k, v):
    out1, _, state = pallas_linear.causal_linear(
        qs[:, :half], k[:, :half], w[:, :half], v[:, :half], chunk_size=8, interpret=True,
        return_state=True)
    out2, _, state = pallas_linear.causal_linear(
        qs[:, half:], k[:, half:], w[:, half:], v[:, half:], chunk_size=8, interpret=True,
        initial_state=state, return_state=True)
    return jnp.concatenate([out1, out2], axis=1), state

  with jax.default_matmul_precision('float32'):
    (out, state), vjp = jax.vjp(whole, qs, k, v)
    (out_split, state_split), vjp_split = jax.vjp(split, qs, k, v)
    rng = np.random.default_rng(7)
    cot_state = tuple(jnp.asarray(rng.normal(size=x.shape), jnp.float32) for x in state)
    grads = vjp((g, cot_state))
    grads_split = vjp_split((g, cot_state))
  ref_out, _ = _reference_vjp(qs, k, w, v, g)
  assert _rel(out, ref_out) <= 1e-5
  assert _rel(out_split, out) <= 1e-5
  for x, y in zip(state, state_split):
    assert x.shape == y.shape and _rel(y, x) <= 1e-5
  for x, y in zip(grads, grads_split):
    assert _rel(y, x) <= 1e-4


@pytest.mark.slow
def test_initial_state_gradient():
  """d out / d (z0, s0) of a nonempty initial state, against the float64 reference."""
  qs, k, w, v, g = _inputs(8, n=24, scale=2.0)
  half = 10

  def second_half(z0, s0, m0):
    out, _ = pallas_linear.causal_linear(qs[:, half:], k[:, half:], w[:, half:], v[:, half:],
                                         chunk_size=8, interpret=True,
                                         initial_state=(m0, z0, s0))
    return out

  with jax.default_matmul_precision('float32'):
    _, _, (m0, z0, s0) = pallas_linear.causal_linear(
        qs[:, :half], k[:, :half], w[:, :half], v[:, :half], chunk_size=8, interpret=True,
        return_state=True)
    out, vjp = jax.vjp(second_half, z0, s0, m0)
    dz0, ds0, dm0 = vjp(g[:, half:])
  with _x64():
    m0_, z0_, s0_, g_ = (jnp.asarray(np.asarray(x), jnp.float64) for x in (m0, z0, s0, g))
    qs_, k_, w_, v_ = (jnp.asarray(np.asarray(x), jnp.float64) for x in (qs, k, w, v))

    def ref(z0, s0, m0):
      # The state as a virtual first key: den += exp(m0) z0, num += exp(m0) s0.
      qsb, kb, wb, vb = qs_[:, half:], k_[:, half:], w_[:, half:], v_[:, half:]
      n = kb.shape[1]
      causal = (jnp.arange(n)[:, None] >= jnp.arange(n)[None, :]).astype(kb.dtype)
      e = (causal[None, :, :, None, None] * wb[:, None, :, None, None]
           * jnp.exp(kb - m0[:, None])[:, None])  # [b, i, j, h, d]
      den = jnp.sum(e, axis=2) + z0[:, None]
      num = jnp.einsum('bijhd,bjhe->bihde', e, vb) + s0[:, None]
      return jnp.einsum('bihd,bihde->bihe', qsb, num / den[..., None])

    ref_out, ref_vjp = jax.vjp(ref, z0_, s0_, m0_)
    ref_grads = ref_vjp(g_[:, half:])
  assert _rel(out, ref_out) <= 1e-5
  for x, y in zip((dz0, ds0, dm0), ref_grads):
    assert _rel(x, y) <= 1e-4


def test_underflow_is_flagged_and_finite():
  qs, k, w, v, g = _inputs(9, n=40, scale=30.0, pad=_pad_keys)
  out, underflow, grads = _kernel_vjp(qs, k, w, v, g, chunk_size=16)
  assert bool(underflow)
  assert np.all(np.isfinite(out))
  for grad in grads:
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize('block_e', [None, 16])
def test_lowers_to_triton_for_cuda_without_a_gpu(block_e):
  """The Pallas -> Triton IR lowering of the forward and both backward kernels.

  jax.export lowers for 'cuda' on a CPU host; the Triton IR is serialised into a
  custom call (compiling it to PTX happens only in XLA on a GPU, not checked here).
  """
  b, n, h, d, e = 1, 64, 2, 16, 32
  shapes = (jax.ShapeDtypeStruct((b, n, h, d), jnp.bfloat16),
            jax.ShapeDtypeStruct((b, n, h, d), jnp.bfloat16),
            jax.ShapeDtypeStruct((b, n), jnp.float32),
            jax.ShapeDtypeStruct((b, n, h, e), jnp.bfloat16))

  def loss(qs, k, w, v):
    out, underflow = pallas_linear.causal_linear(qs, k, w, v, chunk_size=16, block_e=block_e)
    return jnp.sum(out) + underflow

  grad = jax.value_and_grad(loss, argnums=(0, 1, 3))
  checks = [jax.export.DisabledSafetyCheck.custom_call('__gpu$xla.gpu.triton')]
  # JAX 0.11's Triton lowering asks the device for its GPU generation; on a host
  # without a GPU it takes an abstract one (JAX 0.10 does not ask).
  target = contextlib.nullcontext()
  if hasattr(jax.sharding, 'AbstractDevice') and hasattr(jax.sharding, 'use_abstract_mesh'):
    device = jax.sharding.AbstractDevice(device_kind='NVIDIA H200', num_cores=1, platform='gpu')
    target = jax.sharding.use_abstract_mesh(
        jax.sharding.AbstractMesh((), (), abstract_device=device))
  try:
    with target:
      exported = jax.export.export(jax.jit(grad), platforms=('cuda',),
                                   disabled_checks=checks)(*shapes)
  except (ImportError, RuntimeError) as error:
    pytest.skip(f'this JAX cannot lower Triton kernels on this host: {error}')
  text = exported.mlir_module()
  for name in ('causal_linear_fwd', 'causal_linear_bwd_fwd', 'causal_linear_bwd_rev'):
    assert f'name = "{name}"' in text


@pytest.mark.slow
def test_value_blocks():
  """Two programs per (batch, head), each with 16 of the 32 value columns (and e = 20 -> 32)."""
  _check(_inputs(10, n=24, e=20, scale=2.0, pad=_pad_keys), chunk_size=8, block_e=16)
