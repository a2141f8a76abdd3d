"""mesh.py: config.mesh parsing, the FSDP rule, mesh layouts = one device, resharded resume.

The fast tests check the pure pieces and that a bad layout stops before any
work. The multi-device runs happen in subprocesses with 8 fake CPU devices
(JAX fixes its device count at start), one per group, and are marked slow.
"""
import functools
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from linformer_jax import mesh as mesh_lib
from linformer_jax import metrics
from linformer_jax import tasks
from linformer_jax import trainer
from linformer_jax import workdir as workdir_lib
from linformer_jax.data import text

import helpers
from test_trainer import (assert_same_metrics, free_port, logged, snapshot, subprocess_env,
                          without_key_bias)

# Dropout on: the mesh layouts must draw the same masks as one device.
TINY = {'mlm.py': helpers.tiny_overrides('mlm.py', **{'model.dropout_rate': 0.1}),
        'lm.py': helpers.tiny_overrides('lm.py', **{'model.dropout_rate': 0.1})}


def run_with_eight_devices(code, timeout=600):
  """Runs `code` in a fresh Python with 8 fake CPU devices; the JSON it prints after RESULT."""
  env = subprocess_env(XLA_FLAGS='--xla_force_host_platform_device_count=8')
  result = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO, env=env,
                          timeout=timeout, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]
  line = [l for l in result.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


# ----------------------------------------------------------------------------- pure pieces


@pytest.mark.parametrize('spec, devices, expected', [
    ('data:-1,fsdp:1,sequence:1', 8, (8, 1, 1)),
    ('data:2,fsdp:2,sequence:2', 8, (2, 2, 2)),
    ('fsdp:8', 8, (1, 8, 1)),
    ('sequence:-1, data:2', 8, (2, 1, 4)),
    ('data:1,fsdp:2', 2, (1, 2, 1)),
    ('data:-1', 1, (1, 1, 1)),
])
def test_parse_mesh(spec, devices, expected):
  assert mesh_lib.parse_mesh(spec, devices) == dict(zip(mesh_lib.AXES, expected))


@pytest.mark.parametrize('spec, match', [
    ('data:-1,model:2', r"config.mesh='data:-1,model:2': unknown axis 'model'. Valid: .*"
                        r"axes \['data', 'fsdp', 'sequence'\]"),
    ('data:-1,fsdp:-1', r"more than one -1 \(data, fsdp\)"),
    ('data:3,fsdp:-1', r'the sizes given \(3 devices\) do not divide the 8 devices'),
    ('data:2,fsdp:2', r'the sizes multiply to 4 devices, not the 8 there are'),
    ('data:4,data:2', r"axis 'data' given twice"),
    ('data:two', r"size 'two' of axis 'data' is not an integer"),
    ('data:0,fsdp:-1', r"size 0 of axis 'data' is neither >= 1 nor -1"),
    ('', r"unknown axis ''"),
])
def test_bad_mesh_strings_are_named(spec, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.parse_mesh(spec, 8)


def test_fsdp_rule_on_the_tiny_model():
  config = helpers.load('mlm.py', TINY['mlm.py'])
  task = tasks.create(config)
  tx = trainer.create_optimizer(config, trainer.learning_rate_schedule(config))
  state = jax.eval_shape(functools.partial(trainer.create_state, task=task, tx=tx),
                         jax.random.PRNGKey(0))
  params, block = state.params, state.params['encoder']['block_0']
  P = jax.P
  vocab = text.VOCAB_SIZE  # 260 = 4 * 5 * 13
  cases = [  # (param, its shape, fsdp, spec): the largest axis fsdp divides, earliest on a tie.
      (params['mlm_bias'], (vocab,), 8, P()),                 # 260 % 8 != 0: replicated
      (params['mlm_bias'], (vocab,), 4, P('fsdp')),
      (params['embed']['token_embed']['embedding'], (vocab, 32), 8, P(None, 'fsdp')),
      (params['embed']['token_embed']['embedding'], (vocab, 32), 4, P('fsdp', None)),
      (params['embed']['token_embed']['embedding'], (vocab, 32), 5, P('fsdp', None)),
      (params['embed']['token_embed']['embedding'], (vocab, 32), 3, P()),
      (params['embed']['pos_embed'], (64, 32), 8, P('fsdp', None)),
      (params['mlm_dense']['kernel'], (32, 32), 8, P('fsdp', None)),  # a tie: the first
      (block['Dense_0']['kernel'], (32, 64), 8, P(None, 'fsdp')),
      (block['Dense_1']['kernel'], (64, 32), 2, P('fsdp', None)),
      (block['attention']['query']['kernel'], (32, 2, 16), 8, P('fsdp', None, None)),
      (block['attention']['query']['kernel'], (32, 2, 16), 2, P('fsdp', None, None)),
      (block['attention']['query']['bias'], (2, 16), 8, P(None, 'fsdp')),
      (block['local']['conv']['kernel'], (5, 1, 32), 8, P(None, None, 'fsdp')),
      (block['Dense_0']['kernel'], (32, 64), 1, P()),
      (state.step, (), 8, P()),
  ]
  for param, shape, fsdp, spec in cases:
    assert param.shape == shape
    assert mesh_lib.fsdp_spec(shape, fsdp) == spec, (shape, fsdp)
  # Adam's moments follow their parameters; its counts are replicated.
  shardings = {k: v.spec for k, v in _specs(state, fsdp=8).items()}
  assert shardings[".opt_state[1][0].mu['mlm_bias']"] == P()
  assert shardings[".opt_state[1][0].nu['embed']['pos_embed']"] == P('fsdp', None)
  assert shardings[".opt_state[1][0].count"] == P()


def _specs(state, fsdp):
  """{key path: NamedSharding} of `state` on an abstract mesh with `fsdp` devices on 'fsdp'."""
  mesh = jax.sharding.AbstractMesh((1, fsdp, 1), mesh_lib.AXES)
  shardings = mesh_lib.state_shardings(state, mesh)
  return {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}


@pytest.mark.parametrize('batch_size, input_len, shape, match', [
    (12, 64, (8, 1, 1), r'batch_size=12 is not divisible by the mesh axes data x fsdp = 8 '
                        r'\(mesh data:8,fsdp:1,sequence:1\)'),
    (6, 64, (1, 4, 2), r'batch_size=6 is not divisible by the mesh axes data x fsdp = 4'),
    (8, 60, (1, 1, 8), r'input length 60 \(seq_len\) is not divisible by the mesh axis '
                       r'sequence = 8 \(mesh data:1,fsdp:1,sequence:8\)'),
])
def test_batch_not_splitting_over_the_mesh_is_named(batch_size, input_len, shape, match):
  mesh_lib.check_batch(dict(zip(mesh_lib.AXES, shape)), 8 * 3, 64 * 5)  # These do split.
  with pytest.raises(ValueError, match=match):
    mesh_lib.check_batch(dict(zip(mesh_lib.AXES, shape)), batch_size, input_len)


@pytest.mark.parametrize('overrides, match', [
    ({'parallelism': 'jit'}, r"unknown config.parallelism='jit'; valid: \('pmap', 'mesh'\)"),
    ({'parallelism': 'mesh', 'mesh': 'data:-1,tensor:1'}, r"unknown axis 'tensor'"),
    ({'parallelism': 'mesh', 'mesh': 'fsdp:2'}, r'multiply to 2 devices, not the 1 there are'),
])
def test_bad_layout_fails_early_and_keeps_workdir(overrides, match, tmp_path, monkeypatch):
  # A workdir holding a TINY run's config: the layout keys may change on resume,
  # but a bad value must stop the run before anything there is touched.
  workdir = str(tmp_path / 'workdir')
  os.makedirs(workdir)
  workdir_lib.record_config(workdir, helpers.load('mlm.py', TINY['mlm.py']), {}, 0)
  before = snapshot(workdir)

  def too_late(*args, **kwargs):
    raise AssertionError('got past validation')

  monkeypatch.setattr(text, 'baselines', too_late)
  monkeypatch.setattr(trainer, 'create_state', too_late)
  with pytest.raises(ValueError, match=match):
    trainer.train_and_evaluate(helpers.load('mlm.py', {**TINY['mlm.py'], **overrides}), workdir,
                               num_devices=1)
  assert snapshot(workdir) == before


def test_workdir_from_before_the_layout_keys_resumes_under_a_mesh(tmp_path):
  # config.json of a run started before config.parallelism existed: the layout
  # keys are new, and may change like any layout setting.
  workdir = str(tmp_path)
  config = helpers.load('mlm.py', TINY['mlm.py'])
  workdir_lib.record_config(workdir, config, {}, 0)
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  with open(path) as f:
    stored = json.load(f)
  del stored['config']['parallelism'], stored['config']['mesh']
  with open(path, 'w') as f:
    json.dump(stored, f)
  config = helpers.load('mlm.py', {**TINY['mlm.py'], 'parallelism': 'mesh', 'mesh': 'fsdp:-1'})
  assert workdir_lib.check_config(workdir, config) == {
      'mesh': ('<absent>', 'fsdp:-1'), 'parallelism': ('<absent>', 'mesh')}


@pytest.fixture
def fast_compiles():
  jax.config.update('jax_disable_most_optimizations', True)  # As test_trainer does.
  yield
  jax.config.update('jax_disable_most_optimizations', False)


@pytest.mark.slow
@pytest.mark.usefixtures('fast_compiles')
def test_mesh_step_compiles_once_and_evaluates(data_dir, tmp_path, monkeypatch):
  # One device, a one-device mesh: the loop's mesh path end to end (eval, checkpoints).
  monkeypatch.setattr(trainer, 'train_step', chex.assert_max_traces(trainer.train_step, n=1))
  monkeypatch.setattr(trainer, 'eval_step', chex.assert_max_traces(trainer.eval_step, n=1))
  overrides = {**TINY['mlm.py'], 'data_dir': data_dir, 'parallelism': 'mesh', 'log_every_steps': 1,
               'eval_every_steps': 2, 'checkpoint_every_steps': 3}
  config = helpers.load('mlm.py', overrides)
  state = trainer.train_and_evaluate(config, str(tmp_path), num_devices=1, stop_after_step=6)
  assert int(state.step) == 6 and isinstance(state.params['mlm_bias'], np.ndarray)
  records = metrics.read_metrics(str(tmp_path))
  assert sum('eval_loss' in r for r in records) == 3
  assert sorted(os.listdir(tmp_path / 'checkpoints'), key=int) == ['3', '6']
  done = trainer.train_and_evaluate(config, str(tmp_path), num_devices=1, stop_after_step=6)
  chex.assert_trees_all_equal(done.params, state.params)  # Restored, nothing to do.


# ----------------------------------------------------------------------------- 8 devices

LAYOUTS_SCRIPT = r'''
import json, os, sys
import numpy as np
import jax
sys.path.insert(0, os.path.join({repo!r}, 'tests'))
import helpers
from linformer_jax import trainer
from test_trainer import logged, without_key_bias
assert jax.device_count() == 8, jax.devices()
tiny, data_dir, tmp = json.loads({tiny!r}), {data_dir!r}, {tmp!r}
out = {{}}
for name in ('mlm.py', 'lm.py'):
  runs = {{}}
  for layout, devices in json.loads({layouts!r}):
    workdir = os.path.join(tmp, name + layout)
    config = helpers.load(name, {{**tiny[name], 'data_dir': data_dir, 'parallelism': 'mesh',
                                  'mesh': layout, 'log_every_steps': 1}})
    state = trainer.train_and_evaluate(config, workdir, num_devices=devices, stop_after_step=3)
    params = without_key_bias(state.params)
    runs[layout] = {{'losses': [r['train_loss'] for r in logged(workdir)[1:]], 'params': params}}
  reference = runs[{reference!r}]['params']
  norm = np.sqrt(sum(np.sum(np.square(x)) for x in reference.values()))
  out[name] = {{layout: {{'losses': run['losses'], 'param_norm': float(norm),
                          'param_rel_diff': float(np.sqrt(sum(
                              np.sum(np.square(run['params'][k] - reference[k])) for k in reference))
                              / norm)}} for layout, run in runs.items()}}
print('RESULT', json.dumps(out))
'''

REFERENCE = 'data:1'  # One device.
LAYOUTS = [(REFERENCE, 1), ('data:2,fsdp:2,sequence:2', 8), ('fsdp:8', 8), ('sequence:8', 8)]


@pytest.fixture(scope='module')
def layouts(data_dir, tmp_path_factory):
  code = LAYOUTS_SCRIPT.format(repo=helpers.REPO, tiny=json.dumps(TINY), data_dir=data_dir,
                               tmp=str(tmp_path_factory.mktemp('layouts')),
                               layouts=json.dumps(LAYOUTS), reference=REFERENCE)
  return run_with_eight_devices(code)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['mlm.py', 'lm.py'])
@pytest.mark.parametrize('layout', [l for l, _ in LAYOUTS[1:]])
def test_mesh_layouts_give_the_one_device_update_with_dropout(layouts, name, layout):
  # Parameters without the attention key biases (test_trainer.without_key_bias:
  # their true gradient is 0, and Adam scales round-off to +-lr steps).
  run, reference = layouts[name][layout], layouts[name][REFERENCE]
  assert len(run['losses']) == 3
  np.testing.assert_allclose(run['losses'], reference['losses'], rtol=1e-5)
  assert reference['param_norm'] > 1.0
  assert run['param_rel_diff'] <= 1e-5, run['param_rel_diff']


RESUME_SCRIPT = r'''
import json, os, shutil, sys
import jax
sys.path.insert(0, os.path.join({repo!r}, 'tests'))
import helpers
from linformer_jax import trainer
from test_trainer import logged, snapshot
assert jax.device_count() == 8, jax.devices()
tiny, data_dir, tmp = json.loads({tiny!r}), {data_dir!r}, {tmp!r}
out = {{}}

def run(workdir, stop, devices, **overrides):
  config = helpers.load('mlm.py', {{**tiny, 'data_dir': data_dir, 'checkpoint_every_steps': 2,
                                    'log_every_steps': 1, **overrides}})
  state = trainer.train_and_evaluate(config, os.path.join(tmp, workdir), num_devices=devices,
                                     stop_after_step=stop)
  return {{'params': jax.tree.map(lambda x: x.tolist(), state.params),
           'metrics': logged(os.path.join(tmp, workdir)),
           'checkpoints': sorted(os.listdir(os.path.join(tmp, workdir, 'checkpoints')), key=int)}}

# Saved on 8 devices as (data 4, fsdp 2), resumed on 2 as (data 1, fsdp 2); dropout on.
mesh8, mesh2 = {{'parallelism': 'mesh', 'mesh': 'data:4,fsdp:2'}}, {{'parallelism': 'mesh', 'mesh': 'data:1,fsdp:2'}}
out['straight'] = run('straight', 4, 8, **mesh8)
run('resharded', 2, 8, **mesh8)
out['resharded'] = run('resharded', 4, 2, **mesh2)
out['resharded_dir'] = os.path.join(tmp, 'resharded')
# Its step-2 checkpoint was saved while step 3 took (donated) the state.
shutil.copytree(os.path.join(tmp, 'straight'), os.path.join(tmp, 'from_2'))
shutil.rmtree(os.path.join(tmp, 'from_2', 'checkpoints', '4'))
out['from_2'] = run('from_2', 4, 8, **mesh8)

# Saved by pmap on 8 devices, resumed under the mesh on 2. pmap folds device
# indices into its dropout keys, the mesh does not: dropout off.
off = {{'model.dropout_rate': 0.0}}
out['mesh_straight'] = run('mesh_straight', 4, 2, **mesh2, **off)
run('from_pmap', 2, 8, parallelism='pmap', **off)
out['from_pmap'] = run('from_pmap', 4, 2, **mesh2, **off)
# And the other way: saved sharded by the mesh on 2 devices, resumed by pmap on 8.
run('to_pmap', 2, 2, **mesh2, **off)
out['to_pmap'] = run('to_pmap', 4, 8, parallelism='pmap', **off)

# A batch or input length the mesh does not split: stopped before the workdir is made.
out['errors'] = {{}}
for layout, bad in (('data:8', {{'batch_size': 12}}), ('data:2,sequence:4', {{'seq_len': 66}}),
                    ('fsdp:-1', {{'batch_size': 4}})):
  try:
    run('bad', 1, 8, parallelism='mesh', mesh=layout, **bad)
  except ValueError as e:
    out['errors'][layout] = str(e)
out['bad_workdir_exists'] = os.path.exists(os.path.join(tmp, 'bad'))
print('RESULT', json.dumps(out))
'''


@pytest.fixture(scope='module')
def resumed(data_dir, tmp_path_factory):
  code = RESUME_SCRIPT.format(repo=helpers.REPO, tiny=json.dumps(TINY['mlm.py']),
                              data_dir=data_dir, tmp=str(tmp_path_factory.mktemp('resume')))
  return run_with_eight_devices(code)


def _assert_same_run(actual, expected, rtol):
  assert actual['checkpoints'] == expected['checkpoints'] == ['2', '4']
  assert [r['step'] for r in actual['metrics']] == [0, 1, 2, 3, 4]
  assert_same_metrics(actual['metrics'], expected['metrics'], rtol=rtol)
  chex.assert_trees_all_close(without_key_bias(actual['params']),
                              without_key_bias(expected['params']), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_checkpoint_from_eight_devices_resumes_on_two_resharded(resumed):
  _assert_same_run(resumed['resharded'], resumed['straight'], rtol=1e-6)


@pytest.mark.slow
def test_checkpoint_saved_before_a_donating_step_resumes_exactly(resumed):
  # Orbax copies the arrays to the host before save() returns.
  _assert_same_run(resumed['from_2'], resumed['straight'], rtol=1e-6)


@pytest.mark.slow
def test_pmap_checkpoint_resumes_under_the_mesh(resumed):
  _assert_same_run(resumed['from_pmap'], resumed['mesh_straight'], rtol=1e-6)


@pytest.mark.slow
def test_mesh_checkpoint_resumes_under_pmap(resumed):
  _assert_same_run(resumed['to_pmap'], resumed['mesh_straight'], rtol=1e-6)


@pytest.mark.slow
def test_batch_not_splitting_over_eight_devices_writes_nothing(resumed):
  errors = resumed['errors']
  assert 'batch_size=12 is not divisible by the mesh axes data x fsdp = 8' in errors['data:8']
  assert ('input length 66 (seq_len) is not divisible by the mesh axis sequence = 4'
          in errors['data:2,sequence:4'])
  assert 'batch_size=4 is not divisible by the mesh axes data x fsdp = 8' in errors['fsdp:-1']
  assert not resumed['bad_workdir_exists']


@pytest.mark.slow
def test_train_py_runs_the_lm_under_a_mesh(data_dir, tmp_path):
  overrides = {**TINY['lm.py'], 'data_dir': data_dir, 'parallelism': 'mesh',
               'mesh': 'data:-1,fsdp:2', 'num_train_steps': 2, 'log_every_steps': 1}
  command = [sys.executable, os.path.join(helpers.REPO, 'train.py'),
             f'--config={helpers.config_path("lm.py")}', f'--workdir={tmp_path}']
  command += [f'--config.{k}={v}' for k, v in overrides.items()]
  result = subprocess.run(command, cwd=helpers.REPO, timeout=600, capture_output=True, text=True,
                          env=subprocess_env(XLA_FLAGS='--xla_force_host_platform_device_count=8'))
  assert result.returncode == 0, result.stderr[-5000:]
  assert "on 8 devices (1 processes, mesh {'data': 4, 'fsdp': 2, 'sequence': 1})" in result.stderr
  assert os.listdir(tmp_path / 'checkpoints') == ['2']
  records = metrics.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [0, 1, 2]
  assert all(np.isfinite(r['train_loss']) for r in records[1:])


TWO_PROCESSES = r'''
import json, sys
from absl import logging
from linformer_jax import trainer
logging.set_verbosity('info')
sys.path.insert(0, {tests!r})
import helpers
config = helpers.load('mlm.py', json.loads({overrides!r}))
trainer.train_and_evaluate(config, {workdir!r}, stop_after_step=4)
'''


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_mesh(resumed, data_dir, tmp_path):
  # The reference: (data 1, fsdp 2) on 2 devices of one process, steps 3..4.
  # Here the same mesh spans 2 processes of 1 device each: each feeds half the
  # rows, the parameters are split across processes, and each saves its shards.
  reference_dir = resumed['resharded_dir']
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(reference_dir, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
  overrides = {**TINY['mlm.py'], 'data_dir': data_dir, 'checkpoint_every_steps': 2,
               'log_every_steps': 1, 'parallelism': 'mesh', 'mesh': 'data:1,fsdp:2'}
  code = TWO_PROCESSES.format(tests=os.path.join(helpers.REPO, 'tests'), workdir=workdir,
                              overrides=json.dumps({**overrides, 'distributed': True}))
  port = free_port()
  procs = []
  for i in range(2):
    env = subprocess_env(JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                         JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, '-c', code], cwd=helpers.REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  errors = [p.communicate(timeout=600)[1] for p in procs]
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-5000:]
    assert ("Training steps 3..4 of 100 on 2 devices (2 processes, mesh {'data': 1, 'fsdp': 2, "
            "'sequence': 1})") in err
  # Both restored here, on this process's one device: nothing left to train.
  config = helpers.load('mlm.py', {**overrides, 'mesh': 'data:-1'})
  final = trainer.train_and_evaluate(config, workdir, stop_after_step=4)
  reference = trainer.train_and_evaluate(config, reference_dir, stop_after_step=4)
  assert int(final.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints')), key=int) == ['2', '4']
  chex.assert_trees_all_close(without_key_bias(final.params), without_key_bias(reference.params),
                              rtol=1e-5, atol=1e-6)
  assert_same_metrics(logged(workdir), logged(reference_dir), rtol=1e-6)
