"""attend_sharded (context parallelism) on 8 fake CPU devices against the single-device attend.

The devices are faked with XLA_FLAGS in one subprocess (`_measure`, run once
per module), so this process and the rest of the suite keep their one device.
There every kind with a context-parallel form, causal and not, runs in
`jax.shard_map` on meshes of 8 and 4 devices, with padding that straddles
shard boundaries and fills whole shards, at keys x30; values and gradients
must equal the single-device `attend` (max-norm relative error <= 1e-5 and
1e-4 in float32). It also counts the bytes the compiled program's collectives
move at two sequence lengths: they must not depend on n.
"""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

import linformer_jax as lj

# One subprocess on 8 fake devices measures every case (~20 s): the whole suite runs it.
pytestmark = pytest.mark.slow

DEVICES = 8
B, N, H, D, DV, ROWS = 2, 64, 2, 4, 3, 5  # N / 8 = 8 and N / 4 = 16 tokens a device
CHUNK = 4                                 # several chunks a device
MAX_LEN = N + 8                           # Linformer's projections: longer than the sequence
TOL = (1e-5, 1e-4)                        # values, gradients
CASES = [(name, causal) for name, kind in lj.TABLE.items() if kind.context_parallel is not None
         for causal in (False, True) if not causal or kind.causal is not None]
LENGTHS = (8192, 65536)                   # for the communication count


def _data(seed=0):
  rng = np.random.default_rng(seed)
  q, k = rng.normal(size=(2, B, N, H, D))
  k = 30 * k
  v, cot = rng.normal(size=(2, B, N, H, DV))
  mask = rng.random((B, N)) > 0.25
  mask[0, 8:32] = False   # whole shards of padding: 1 and 2 of 8, 1 of 4
  mask[1, :4] = False     # leading padding
  mask[1, 28:36] = False  # straddles the boundary at 32 (8 and 4 devices)
  mask[1, 48:] = False    # trailing: the last shards, or the last 2 of 8, hold no key
  e, f = rng.normal(size=(2, ROWS, MAX_LEN)) / np.sqrt(ROWS)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return (f32(q), f32(k), f32(v), jnp.asarray(mask), f32(e), f32(f)), f32(cot)


def _projections(kind, e, f):
  return (e, f) if lj.TABLE[kind].needs_projections else None


def _sharded(kind, causal, mesh):
  """shard_map of attend_sharded over the mesh axis 'seq': (q, k, v, mask, e, f) -> out."""
  seq, whole = jax.sharding.PartitionSpec(None, 'seq'), jax.sharding.PartitionSpec()

  def local(q, k, v, mask, e, f):
    return lj.attend_sharded(kind, q, k, v, axis_name='seq', key_mask=mask, causal=causal,
                             chunk_size=CHUNK, projections=_projections(kind, e, f))
  return jax.shard_map(local, mesh=mesh, in_specs=(seq,) * 4 + (whole,) * 2, out_specs=seq)


def _single(kind, causal):
  def fn(q, k, v, mask, e, f):
    return lj.attend(kind, q, k, v, key_mask=mask, causal=causal, chunk_size=CHUNK,
                     projections=_projections(kind, e, f))
  return fn


def _out_and_grads(fn, projections=True):
  """jit of (inputs, cot) -> (out, d<out, cot>/d(q, k, v[, e, f]))."""
  def run(inputs, cot):
    q, k, v, mask, e, f = inputs
    if projections:
      out, vjp = jax.vjp(lambda q, k, v, e, f: fn(q, k, v, mask, e, f), q, k, v, e, f)
    else:
      out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, e, f), q, k, v)
    return out, vjp(cot)
  return jax.jit(run)


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4, 's32': 4,
          'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
_COLLECTIVE = re.compile(r'=\s*(.*?)\s(all-reduce|all-gather|reduce-scatter|collective-permute|'
                         r'all-to-all)(-start)?\(')


def collective_bytes(hlo_text):
  """{op: bytes of its results} over the collectives of a compiled HLO module's text."""
  totals = {}
  for match in _COLLECTIVE.finditer(hlo_text):
    shapes, op = match.group(1), match.group(2)
    size = sum(_BYTES[dtype] * int(np.prod([int(x) for x in dims.split(',') if x]))
               for dtype, dims in re.findall(r'\b([a-z]+\d*)\[([\d,]*)\]', shapes))
    totals[op] = totals.get(op, 0) + size
  return totals


def _measure():
  """Runs in the DEVICES-device subprocess; prints one JSON line of errors and byte counts."""
  assert jax.device_count() == DEVICES, jax.devices()
  results = {'errors': {}, 'bytes': {}}
  inputs, cot = _data()
  with jax.default_matmul_precision('float32'):
    for kind, causal in CASES:
      want_out, want_grads = _out_and_grads(_single(kind, causal))(inputs, cot)
      for size in (8, 4):
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:size]), ('seq',))
        out, grads = _out_and_grads(_sharded(kind, causal, mesh))(inputs, cot)
        names = ('out', 'dq', 'dk', 'dv') + (('de', 'df') if lj.TABLE[kind].needs_projections
                                             else ())
        results['errors'][f'{kind} causal={causal} devices={size}'] = {
            name: _rel(got, want) for name, got, want in zip(names, (out,) + grads,
                                                             (want_out,) + want_grads)}
      mesh = jax.sharding.Mesh(np.array(jax.devices()), ('seq',))
      for n in LENGTHS:
        spec = lambda *shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)
        abstract = ((spec(B, n, H, D), spec(B, n, H, D), spec(B, n, H, DV),
                     spec(B, n, dtype=jnp.bool_), spec(ROWS, n), spec(ROWS, n)), spec(B, n, H, DV))
        # The activations' gradients only: E and F are parameters, whose gradient
        # ([k, max_len], replicated) is reduced like any parameter's.
        run = _out_and_grads(_sharded(kind, causal, mesh), projections=False)
        hlo = run.lower(*abstract).compile().as_text()
        results['bytes'][f'{kind} causal={causal} n={n}'] = collective_bytes(hlo)
  print(json.dumps(results))


@pytest.fixture(scope='module')
def measured():
  return helpers.measure_on_fake_devices('test_context_parallel', DEVICES, timeout=600)


@pytest.mark.parametrize('kind,causal', CASES)
@pytest.mark.parametrize('devices', [8, 4])
def test_sharded_equals_single_device(measured, kind, causal, devices):
  errors = measured['errors'][f'{kind} causal={causal} devices={devices}']
  for name, error in errors.items():
    assert error <= TOL[name != 'out'], f'{name}: {error:.2e}'


@pytest.mark.parametrize('kind,causal', CASES)
def test_communication_does_not_grow_with_length(measured, kind, causal):
  short, long = (measured['bytes'][f'{kind} causal={causal} n={n}'] for n in LENGTHS)
  assert short, 'no collectives found in the compiled HLO'
  assert short == long
  # Far below one device's keys at the shorter length (B·n/8·H·D float32).
  assert sum(short.values()) < B * LENGTHS[0] // DEVICES * H * D * 4


def test_collective_bytes_parses_hlo():
  hlo = ('  %all-reduce.1 = (f32[2,2,4]{2,1,0}, f32[2,2,4,3]{3,2,1,0}) all-reduce(%a, %b), '
         'replica_groups={{0,1}}\n'
         '  %all-gather = f32[8,2,2,4]{3,2,1,0} all-gather(f32[1,2,2,4]{3,2,1,0} %m), dimensions={0}\n'
         '  %add = f32[2]{0} add(%x, %y)\n')
  assert collective_bytes(hlo) == {'all-reduce': 4 * (16 + 48), 'all-gather': 4 * 128}


@pytest.mark.parametrize('kind', [name for name, kind in lj.TABLE.items()
                                  if kind.context_parallel is None])
def test_kinds_without_a_sharded_form_are_refused(kind):
  x = jnp.zeros((1, 4, 1, 2))
  with pytest.raises(ValueError, match=rf"'{re.escape(kind)}' attention has no context-parallel form.*"
                                       r'ring attention is not implemented'):
    lj.attend_sharded(kind, x, x, x, axis_name='seq')


def test_causal_linformer_is_refused():
  x = jnp.zeros((1, 4, 1, 2))
  with pytest.raises(ValueError, match="'linformer' attention has no causal form"):
    lj.attend_sharded('linformer', x, x, x, axis_name='seq', causal=True,
                      projections=(jnp.zeros((2, 4)),) * 2)
