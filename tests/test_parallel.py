"""parallel.py on the devices this process has (the 8-device runs are in test_trainer, slow)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linformer_jax import parallel


def test_shard_replicate_unreplicate_round_trip():
  devices = parallel.local_devices()
  n = len(devices)
  batch = {'inputs': np.arange(4 * n * 3).reshape(4 * n, 3)}
  sharded = parallel.shard(batch, devices)
  assert sharded['inputs'].shape == (n, 4, 3)
  np.testing.assert_array_equal(np.asarray(sharded['inputs']).reshape(4 * n, 3), batch['inputs'])
  tree = {'w': np.ones((2, 3), np.float32), 'step': np.int32(7)}
  replicated = parallel.replicate(tree, devices)
  assert replicated['w'].shape == (n, 2, 3)
  back = parallel.unreplicate(replicated)
  np.testing.assert_array_equal(back['w'], tree['w'])
  assert back['step'] == 7


def test_pmapped_step_sums_over_devices():
  devices = parallel.local_devices()

  def step(params, batch, *, axis_name):
    return jax.lax.psum(jnp.sum(batch['x']) * params, axis_name)

  p_step = parallel.pmap_eval_step(step, devices)
  x = np.arange(2.0 * len(devices))
  out = p_step(parallel.replicate(np.float32(2.0), devices), parallel.shard({'x': x}, devices))
  assert float(parallel.unreplicate(out)) == 2.0 * x.sum()


def test_bad_device_counts_and_batch_sizes_are_named():
  count = len(jax.local_devices())
  with pytest.raises(ValueError, match=rf'num_devices=0 must be in \[1, {count}\]'):
    parallel.local_devices(0)
  with pytest.raises(ValueError, match=rf'num_devices={count + 1} must be in'):
    parallel.local_devices(count + 1)
  # Only the number of devices matters: three stand-ins.
  parallel.check_batch_size(6, [None] * 3)
  with pytest.raises(ValueError, match=r'batch_size=4 is not divisible by the number of devices 3 '
                                       r'\(3 local x 1 processes\); use a multiple of 3'):
    parallel.check_batch_size(4, [None] * 3)
