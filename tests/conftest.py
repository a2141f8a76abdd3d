"""Session-wide test setup: a persistent JAX compilation cache, unoptimised CPU
code generation, float32 matmuls and `data_dir`.

XLA takes seconds to compile even a tiny train step on CPU, and the training
tests compile the same steps in this process and in subprocesses. A cache in a
temporary directory, shared through the environment, compiles each only once
per session. Set here, before any test compiles anything.

The tests' programs are small, so on CPU their time is mostly LLVM optimising
code that then runs for milliseconds: this process compiles with
`--xla_backend_optimization_level=0` (the fast suite took 382 s serial on 2 CPU
cores with LLVM's default, see README "Tests"). Only this process: the flag is
taken out of the environment again once the backend has read it, so training
runs and benchmarks in subprocesses compile as users' runs do. Not set where an
accelerator plugin is installed, or where XLA_FLAGS already sets the level.
"""
import importlib.metadata
import os
import shutil
import tempfile

import jax
import pytest

_CACHE_DIR = tempfile.mkdtemp(prefix='linformer_jax_jit_cache_')
_SETTINGS = {
    'jax_compilation_cache_dir': _CACHE_DIR,
    'jax_persistent_cache_min_compile_time_secs': 0,
    'jax_persistent_cache_min_entry_size_bytes': 0,
}
for name, value in _SETTINGS.items():
  os.environ[name.upper()] = str(value)  # Inherited by subprocesses.
  jax.config.update(name, value)


def _cpu_only():
  names = {d.metadata['Name'].lower() for d in importlib.metadata.distributions()}
  return not any(n.startswith(('jax-cuda', 'jax_cuda', 'jax-rocm', 'libtpu')) for n in names)


if _cpu_only() and 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  _flags = os.environ.get('XLA_FLAGS')
  os.environ['XLA_FLAGS'] = f"{_flags or ''} --xla_backend_optimization_level=0".strip()
  jax.devices()  # The backend reads XLA_FLAGS once, here.
  if _flags is None:
    del os.environ['XLA_FLAGS']
  else:
    os.environ['XLA_FLAGS'] = _flags


def pytest_sessionfinish(session, exitstatus):
  shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _float32_matmuls():
  """Tests compare with float32 and float64 references, so float32 matmuls run in
  true float32 on every backend (the default is TF32 on GPUs, bf16 passes on
  TPUs), as JAX's own suite does. A test that wants another precision sets it."""
  with jax.default_matmul_precision('float32'):
    yield


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data_dir with the embedded stdlib_docs corpus, prepared once per session."""
  from linformer_jax.data import stdlib_corpus  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('tfds'))
  builder = stdlib_corpus.prepare(path)
  assert builder.info.splits['train'].num_examples > 100
  assert builder.info.splits['validation'].num_examples > 0
  return path
