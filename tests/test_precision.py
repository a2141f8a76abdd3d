"""The precision policy: compute dtype, parameter dtype and matmul precision, read off the jaxpr."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import linformer_jax as lj
from test_attention import _sub_jaxprs


def _dots(fn, *args):
  """Counter of (operand dtypes, result dtype, precision) over every dot_general in fn's jaxpr."""
  found = collections.Counter()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found[(tuple(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype),
               str(eqn.params['precision']))] += 1
      for inner in _sub_jaxprs(eqn):
        walk(inner)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def _model(attention='linear', causal=False, **kw):
  cfg = lj.tiny(attention=attention, causal=causal, conv_width=3, **kw)
  model = lj.LanguageModel(cfg) if causal else lj.MLMModel(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 24)), jnp.int32)
  return model, model.init(jax.random.key(0), tokens)['params'], tokens


@pytest.mark.parametrize('attention,causal', [('linear', False), ('linear', True), ('softmax', False),
                                              ('elu_linear', True), ('linformer', False)])
def test_bfloat16_compute_float32_params_and_sums(attention, causal):
  # softmax: the explicit kernel ('jax', jax.nn.dot_product_attention, returns bf16 as cuDNN does).
  impl = {'implementation': 'xla'} if attention == 'softmax' else {}
  model, params, tokens = _model(attention, causal, dtype='bfloat16', **impl)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  dots = _dots(lambda p: model.apply({'params': p}, tokens), params)
  # Every matmul but the tied output layer (float32 logits) takes bf16 operands,
  # and every matmul accumulates and returns float32.
  f32_operands = sum(n for (ops, _, _), n in dots.items() if ops != ('bfloat16', 'bfloat16'))
  assert f32_operands == 1, dots
  assert all(out == 'float32' for (_, out, _) in dots), dots
  logits = model.apply({'params': params}, tokens)
  assert logits.dtype == jnp.float32
  f32_model, _, _ = _model(attention, causal, **impl)
  want = f32_model.apply({'params': params}, tokens)
  # A whole model: two blocks of bf16 matmuls, each operand rounded to 8 bits (2^-8 = 4e-3)
  # per matmul; measured 0.6-2.3e-2 across these kinds.
  assert np.max(np.abs(logits - want)) / np.max(np.abs(want)) < 3e-2


def test_float32_default_is_unchanged_and_precision_reaches_every_matmul():
  # Under the backend's fastest setting, precision='highest' still reaches every matmul.
  with jax.default_matmul_precision('bfloat16'):
    model, params, tokens = _model(precision='highest')
    dots = _dots(lambda p: model.apply({'params': p}, tokens), params)
    assert {ops for (ops, _, _) in dots} == {('float32', 'float32')}
    assert {prec for (_, _, prec) in dots} == {str((lax.Precision.HIGHEST,) * 2)}, dots
    default, _, _ = _model()
    precs = {prec for (_, _, prec) in _dots(lambda p: default.apply({'params': p}, tokens), params)}
    assert precs == {str((lax.Precision.DEFAULT,) * 2)}, precs


def test_param_dtype_bfloat16():
  _, params, _ = _model(param_dtype='bfloat16', attention='linformer')
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.slow
def test_optimizer_state_follows_float32_params_in_bfloat16_models():
  model, params, tokens = _model(dtype='bfloat16')
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  assert {x.dtype for x in jax.tree.leaves(opt_state) if x.ndim} == {jnp.dtype(jnp.float32)}

  def loss(p):
    return jnp.mean(model.apply({'params': p}, tokens) ** 2)
  grads = jax.grad(loss)(params)
  assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('bad,match', [
    (dict(dtype='float16'), "dtype='float16' needs loss scaling.*use 'bfloat16'"),
    (dict(dtype='float64'), r"unknown dtype 'float64'; valid: \('float32', 'bfloat16'\)"),
    (dict(param_dtype='float16'), "unknown param_dtype 'float16'"),
    (dict(precision='tf32'), r"unknown precision 'tf32'; valid: \('default', 'high', 'highest'\)"),
    (dict(attention='linear', causal=True, implementation='xla'),
     r"implementation 'xla' is not one of 'linear' attention's causal implementations; "
     r"valid: \('auto', 'scan', 'chunked', 'pallas'\)"),
])
def test_bad_numerics_settings_are_named(bad, match):
  with pytest.raises(ValueError, match=match):
    lj.tiny(**bad)


def test_implementation_reaches_the_kernel():
  """A model forced onto the chunk-parallel path equals the default (scan on CPU) one."""
  model, params, tokens = _model(causal=True)
  forced = lj.LanguageModel(lj.tiny(attention='linear', causal=True, conv_width=3,
                                    implementation='chunked'))
  np.testing.assert_allclose(forced.apply({'params': params}, tokens),
                             model.apply({'params': params}, tokens), rtol=1e-5, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(lambda p: forced.apply({'params': p}, tokens))(params))
  assert 'platform_index' not in jaxpr and 'cumsum' in jaxpr
