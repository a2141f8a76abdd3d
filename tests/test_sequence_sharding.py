"""Models under a mesh with a 'sequence' axis (sequence_sharding.py) against the unsharded models.

On 8 fake CPU devices in one subprocess (`_measure`, once per module; slow):
the masked-LM and causal-LM models (TINY sizes from helpers.py, a width-4
local mixing convolution, padding that straddles device boundaries and fills
whole shards) run under `jax.set_mesh` on meshes data 1 x fsdp 1 x sequence 8
and data 2 x fsdp 1 x sequence 4, for every kind with a context-parallel form
and for softmax and window (left to XLA: same result, O(n) communication).
Logits must equal the unsharded model's (max-norm relative error <= 1e-5) and
so must the parameter gradients (‖Δ‖/‖g‖ <= 1e-5); the NNX encoder likewise,
and a batch of one that the mesh's data axis does not divide (init, apply);
the sharded convolution alone against `conv.depthwise_conv`. The compiled
sharded gradient step's collectives must move the same bytes at n = 8192 and
65536 (compiled only; parameters, and so their gradients' reductions, do not
depend on n there), and softmax's must grow. The fast tests need no second device.
"""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import helpers
import linformer_jax as lj
from linformer_jax import conv as conv_lib
from linformer_jax import sequence_sharding
import test_context_parallel

DEVICES = 8
MESHES = {'sequence=8': (1, 1, 8), 'data=2,sequence=4': (2, 1, 4)}
AXES = ('data', 'fsdp', 'sequence')
B, N, CHUNK, WIDTH = 2, 64, 4, 4
TOL = 1e-5
SHARDED = tuple(name for name, kind in lj.TABLE.items() if kind.context_parallel is not None)
GATHERED = tuple(name for name in lj.KINDS if name not in SHARDED)
# (head, kind): every kind with a context-parallel form in each model it fits, and one
# model for each kind left to XLA.
CASES = ([('mlm', kind) for kind in SHARDED]
         + [('lm', kind) for kind in SHARDED if lj.TABLE[kind].causal is not None]
         + [('mlm', 'softmax'), ('lm', 'window')])
LENGTHS = (8192, 65536)  # for the communication count (compiled, not run)
COUNTED = [case for case in CASES if case[1] in SHARDED] + [('mlm', 'softmax')]
CONV_PADDINGS = ((3, 0), (1, 2), (0, 3), (4, 4), (0, 0))  # causal, centred (even w), 4 = a shard


def _config(head, kind, **overrides):
  tiny = {key.split('.', 1)[1]: value for key, value in helpers.TINY_MODEL.items()}
  return lj.ModelConfig(**{**tiny, 'attention': kind, 'causal': head == 'lm', 'max_len': N,
                           'chunk_size': CHUNK, 'conv_width': WIDTH, 'dropout_rate': 0.0,
                           'window': 8, **overrides})


def _model(cfg):
  return (lj.LanguageModel if cfg.causal else lj.MLMModel)(cfg)


def _tokens(cfg, n=N, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.pad_id, (B, n))
  tokens[0, 6:11] = cfg.pad_id    # straddles the boundary at 8 (8 devices)
  tokens[0, 30:34] = cfg.pad_id   # straddles 32 (8 and 4 devices)
  tokens[1, :3] = cfg.pad_id      # leading
  tokens[1, 48:] = cfg.pad_id     # trailing: the last shards hold no real token
  return jnp.asarray(tokens)


def _logits_and_grads(model):
  def run(params, tokens, cot):
    logits, vjp = jax.vjp(lambda p: model.apply(p, tokens), params)
    return logits, vjp(cot)[0]
  return run


def _mesh(shape):
  return jax.sharding.Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), AXES)


def _on_mesh(fn, mesh, replicated, sharded):
  """jit of fn under the mesh: `replicated` leading arguments, then `sharded` ones split
  P(('data', 'fsdp'), 'sequence'), as the trainer's mesh step is."""
  shardings = ((NamedSharding(mesh, P()),) * replicated
               + (NamedSharding(mesh, P(('data', 'fsdp'), 'sequence')),) * sharded)
  return jax.jit(fn, in_shardings=shardings)


# replica_groups={{0},{1},...}: an all-reduce among one device each, which moves nothing.
_ALONE = re.compile(r'replica_groups=\{\{\d+\}(,\{\d+\})*\}')


def collective_bytes(hlo_text):
  """test_context_parallel.collective_bytes over the collectives between devices."""
  return test_context_parallel.collective_bytes(
      '\n'.join(line for line in hlo_text.splitlines() if not _ALONE.search(line)))


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _tree_rel(got, want):
  diff = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), got, want)
  norm = lambda tree: np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                                  for x in jax.tree.leaves(tree)))
  return float(norm(diff) / norm(want))


def _model_errors():
  errors = {}
  for head, kind in CASES:
    cfg = _config(head, kind)
    model, tokens = _model(cfg), _tokens(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    cot = jnp.asarray(np.random.default_rng(1).normal(size=(B, N, cfg.vocab_size)), jnp.float32)
    run = _logits_and_grads(model)
    want_logits, want_grads = jax.jit(run)(params, tokens, cot)
    for name, shape in MESHES.items():
      mesh = _mesh(shape)
      with jax.set_mesh(mesh):
        logits, grads = _on_mesh(run, mesh, 1, 2)(params, tokens, cot)
      errors[f'{head} {kind} {name}'] = {'logits': _rel(logits, want_logits),
                                         'grads': _tree_rel(grads, want_grads)}
  return errors


def _init_errors():
  """A batch of one under data 2 x sequence 4 (as the trainer's init traces the model):
  the batch is not split, the sequence is; params and logits equal the unsharded ones."""
  cfg = _config('lm', 'linear')
  model, tokens = _model(cfg), _tokens(cfg)[1:]
  want_params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
  want = jax.jit(model.apply)(want_params, tokens)
  mesh = _mesh(MESHES['data=2,sequence=4'])
  with jax.set_mesh(mesh):
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    logits = jax.jit(model.apply, in_shardings=(NamedSharding(mesh, P()),
                                                NamedSharding(mesh, P(None, 'sequence'))))(
                                                    params, tokens)
  return {'params': _tree_rel(params, want_params), 'logits': _rel(logits, want)}


def _nnx_errors():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from linformer_jax import nnx as ljnnx  # pylint: disable=g-import-not-at-top
  errors = {}
  for head, kind in (('lm', 'linear'), ('mlm', 'linformer')):
    cfg = _config(head, kind)
    graphdef, state = nnx.split(ljnnx.Encoder(cfg, rngs=nnx.Rngs(0)))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(B, N, cfg.emb_dim)), jnp.float32)
    mask = _tokens(cfg) != cfg.pad_id
    run = lambda state, x, mask: nnx.merge(graphdef, state)(x, mask, deterministic=True)
    want = jax.jit(run)(state, x, mask)
    for name, shape in MESHES.items():
      mesh = _mesh(shape)
      with jax.set_mesh(mesh):
        errors[f'nnx {head} {kind} {name}'] = _rel(_on_mesh(run, mesh, 1, 2)(state, x, mask), want)
  return errors


def _conv_errors():
  """The sharded convolution alone: values and both gradients, 8 devices, 4 tokens each."""
  errors = {}
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(B, 32, 5)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(B, 32, 5)), jnp.float32)
  for low, high in CONV_PADDINGS:
    kernel = jnp.asarray(rng.normal(size=(low + high + 1, 5)), jnp.float32)

    def run(kernel, x, cot, conv):
      y, vjp = jax.vjp(lambda x, k: conv(x, k, ((low, high),)), x, kernel)
      return (y,) + vjp(cot)
    want = jax.jit(lambda k, x, c: run(k, x, c, conv_lib.depthwise_conv))(kernel, x, cot)
    mesh = _mesh(MESHES['sequence=8'])
    with jax.set_mesh(mesh):
      got = _on_mesh(lambda k, x, c: run(k, x, c, sequence_sharding.depthwise_conv), mesh, 1, 2)(
          kernel, x, cot)
    errors[f'conv {low},{high}'] = [_rel(g, w) for g, w in zip(got, want)]
  return errors


def _bytes():
  """Collective bytes of the compiled sharded gradient step, by case and n."""
  results = {}
  mesh = _mesh(MESHES['sequence=8'])
  for head, kind in COUNTED:
    # Sinusoidal positions and max_len fixed: no parameter depends on n.
    cfg = _config(head, kind, max_len=max(LENGTHS), position='sinusoidal', chunk_size=64)
    model = _model(cfg)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((B, N), jnp.int32))
    for n in LENGTHS:
      abstract = (jax.ShapeDtypeStruct((B, n), jnp.int32),
                  jax.ShapeDtypeStruct((B, n, cfg.vocab_size), jnp.float32))
      with jax.set_mesh(mesh):
        hlo = _on_mesh(_logits_and_grads(model), mesh, 1, 2).lower(params, *abstract).compile()
      results[f'{head} {kind} n={n}'] = collective_bytes(hlo.as_text())
  return results


def _measure():
  """Runs in the DEVICES-device subprocess; prints one JSON line."""
  assert jax.device_count() == DEVICES, jax.devices()
  with jax.default_matmul_precision('float32'):
    print(json.dumps({'models': _model_errors(), 'init': _init_errors(), 'nnx': _nnx_errors(),
                      'conv': _conv_errors(), 'bytes': _bytes()}))


@pytest.fixture(scope='module')
def measured():
  return helpers.measure_on_fake_devices('test_sequence_sharding', DEVICES, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize('mesh', list(MESHES))
@pytest.mark.parametrize('head,kind', CASES)
def test_sharded_model_equals_unsharded(measured, head, kind, mesh):
  errors = measured['models'][f'{head} {kind} {mesh}']
  assert errors['logits'] <= TOL, errors
  assert errors['grads'] <= TOL, errors


@pytest.mark.slow
def test_batch_the_mesh_does_not_divide_is_replicated(measured):
  assert measured['init']['params'] == 0.0  # init reads only the rng
  assert measured['init']['logits'] <= TOL, measured['init']


@pytest.mark.slow
def test_sharded_nnx_encoder_equals_unsharded(measured):
  assert len(measured['nnx']) == 2 * len(MESHES)
  for case, error in measured['nnx'].items():
    assert error <= TOL, (case, error)


@pytest.mark.slow
@pytest.mark.parametrize('padding', CONV_PADDINGS)
def test_sharded_convolution_equals_unsharded(measured, padding):
  errors = measured['conv'][f'conv {padding[0]},{padding[1]}']
  assert max(errors) <= TOL, dict(zip(('y', 'dx', 'dkernel'), errors))


@pytest.mark.slow
@pytest.mark.parametrize('head,kind', [case for case in COUNTED if case[1] in SHARDED])
def test_communication_does_not_grow_with_length(measured, head, kind):
  short, long = (measured['bytes'][f'{head} {kind} n={n}'] for n in LENGTHS)
  assert short, 'no collectives found in the compiled HLO'
  assert short == long


@pytest.mark.slow
def test_gathered_kinds_communicate_in_proportion_to_length(measured):
  """softmax has no context-parallel form: XLA gathers its keys and values (O(n))."""
  short, long = (measured['bytes'][f'mlm softmax n={n}'].get('all-gather', 0) for n in LENGTHS)
  # At least the whole sequence's keys (B·n·emb_dim float32), and in proportion to n.
  assert short >= B * LENGTHS[0] * helpers.TINY_MODEL['model.emb_dim'] * 4
  assert long >= 0.9 * LENGTHS[1] / LENGTHS[0] * short


def test_collective_bytes_skips_collectives_within_one_device():
  hlo = ('  %all-reduce.34 = (f32[16,128]{1,0}) all-reduce(%a), channel_id=1, '
         'replica_groups={{0},{1},{2}}, use_global_device_ids=true\n'
         '  %all-reduce.1 = f32[2,4]{1,0} all-reduce(%b), replica_groups={{0,1}}\n')
  assert collective_bytes(hlo) == {'all-reduce': 32}


# --- Fast: one device ---

def test_no_mesh_and_sequence_one_are_the_plain_kernels():
  cfg = _config('lm', 'linear')
  block = lj.EncoderBlock(cfg)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(B, N, cfg.emb_dim)), jnp.float32)
  mask = _tokens(cfg) != cfg.pad_id
  params = jax.jit(block.init)(jax.random.PRNGKey(0), x, mask)
  want = jax.jit(block.apply)(params, x, mask)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), AXES)
  with jax.set_mesh(mesh):
    assert sequence_sharding.sequence_mesh() is None
    got = jax.jit(block.apply)(params, x, mask)
  np.testing.assert_array_equal(got, want)


def _abstract_mesh(sequence):
  return jax.sharding.AbstractMesh((1, 1, sequence), AXES)


def test_length_not_a_multiple_of_the_sequence_axis_is_named():
  cfg = _config('lm', 'linear', conv_width=0)
  model = _model(cfg)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((B, 8), jnp.int32))
  with jax.sharding.use_abstract_mesh(_abstract_mesh(8)):
    with pytest.raises(ValueError, match=r"'linear' attention: sequence length 12 is not a "
                                         r"multiple of the mesh axis 'sequence' \(size 8\)"):
      jax.eval_shape(model.apply, params, jnp.zeros((B, 12), jnp.int32))


def test_convolution_wider_than_a_shard_is_named():
  x, kernel = jnp.zeros((1, 16, 3)), jnp.zeros((5, 3))
  with jax.sharding.use_abstract_mesh(_abstract_mesh(8)):
    with pytest.raises(ValueError, match=r'pads \(4, 0\) tokens but each of the 8 devices .* holds '
                                         r'only 2 of the 16'):
      jax.eval_shape(lambda x: sequence_sharding.depthwise_conv(x, kernel, ((4, 0),)), x)


def test_sharded_convolution_checks_its_arguments_as_the_plain_one():
  x, kernel = jnp.zeros((1, 64, 3)), jnp.zeros((5, 3))
  with jax.sharding.use_abstract_mesh(_abstract_mesh(8)):
    with pytest.raises(ValueError, match=r'padding \(\(5, 0\),\) must be in \[0, window - 1\]'):
      jax.eval_shape(lambda x: sequence_sharding.depthwise_conv(x, kernel, ((5, 0),)), x)
