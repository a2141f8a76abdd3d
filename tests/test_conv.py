"""conv.depthwise_conv and its hand-written gradient against lax's grouped convolution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

import linformer_jax as lj
from linformer_jax.conv import depthwise_conv

RNG = np.random.default_rng(0)

CASES = [  # x shape, window, padding
    ((2, 37, 5), (7,), ((3, 3),)),             # centred, n not a multiple of w
    ((2, 37, 5), (4,), ((3, 0),)),             # causal
    ((2, 36, 5), (4,), ((1, 2),)),             # centred, even width ('SAME')
    ((3, 4, 5), (4,), ((0, 0),)),              # valid: one output (a decoding step)
    ((2, 9, 7, 3), (3, 3), ((1, 1), (1, 1))),  # 2-D
    # The rarer shapes run in the whole suite (slow).
    pytest.param((1, 5, 3), (1,), ((0, 0),), marks=pytest.mark.slow),
    pytest.param((2, 3, 4), (31,), ((15, 15),), marks=pytest.mark.slow),  # window longer than n
    pytest.param((2, 6, 10, 3), (5, 5), ((2, 2), (2, 2)), marks=pytest.mark.slow),
]


def _reference(x, kernel, padding):
  nd = kernel.ndim - 1
  dims = {1: ('NWC', 'WIO', 'NWC'), 2: ('NHWC', 'HWIO', 'NHWC')}[nd]
  return lax.conv_general_dilated(x, kernel[..., None, :], (1,) * nd, padding,
                                  dimension_numbers=dims, feature_group_count=x.shape[-1],
                                  precision='highest')


@pytest.mark.parametrize('shape,window,padding', CASES)
def test_value_and_gradients_equal_lax_grouped_conv_in_float64(shape, window, padding):
  with jax.enable_x64(True):
    x = jnp.asarray(RNG.standard_normal(shape))
    kernel = jnp.asarray(RNG.standard_normal(window + (shape[-1],)))
    y, expected = depthwise_conv(x, kernel, padding), _reference(x, kernel, padding)
    assert y.shape == expected.shape and y.dtype == jnp.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    cotangent = jnp.asarray(RNG.standard_normal(expected.shape))
    grads = jax.grad(lambda x, k: (depthwise_conv(x, k, padding) * cotangent).sum(), (0, 1))
    ref_grads = jax.grad(lambda x, k: (_reference(x, k, padding) * cotangent).sum(), (0, 1))
    for got, want in zip(grads(x, kernel), ref_grads(x, kernel)):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_bfloat16_stays_bfloat16_and_close():
  x = jnp.asarray(RNG.standard_normal((2, 40, 8)), jnp.bfloat16)
  kernel = jnp.asarray(RNG.standard_normal((5, 8)), jnp.bfloat16)
  y = depthwise_conv(x, kernel, ((2, 2),))
  dx, dk = jax.grad(lambda x, k: depthwise_conv(x, k, ((2, 2),)).astype(jnp.float32).sum(),
                    (0, 1))(x, kernel)
  assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  f32 = lambda a: a.astype(jnp.float32)
  np.testing.assert_allclose(f32(y), _reference(f32(x), f32(kernel), ((2, 2),)), atol=0.1)


@pytest.mark.parametrize('padding', [((5, 0),), ((-1, 1),), ((1, 1), (1, 1))])
def test_rejects_bad_padding(padding):
  with pytest.raises(ValueError, match='padding'):
    depthwise_conv(jnp.zeros((1, 8, 2)), jnp.zeros((5, 2)), padding)


@pytest.mark.parametrize('window', [(5,), (3, 3)])
def test_depthwise_conv_module_is_nn_conv_with_the_same_parameters(window):
  """Same parameter tree and initial values as nn.Conv(feature_group_count=e), same output."""
  e = 6
  x = jnp.asarray(RNG.standard_normal((2,) + (8,) * len(window) + (e,)), jnp.float32)
  ours = lj.layers.DepthwiseConv(window)
  theirs = nn.Conv(e, window, padding='SAME', feature_group_count=e)
  params = ours.init(jax.random.key(3), x, (lj.layers.centred(window[0]),) * len(window))
  their_params = theirs.init(jax.random.key(3), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, their_params)
  jax.tree.map(np.testing.assert_array_equal, params, their_params)
  params = jax.tree.map(lambda p: p + jnp.asarray(RNG.standard_normal(p.shape), p.dtype), params)
  np.testing.assert_allclose(
      ours.apply(params, x, (lj.layers.centred(window[0]),) * len(window)),
      theirs.apply(params, x), rtol=1e-5, atol=1e-5)
