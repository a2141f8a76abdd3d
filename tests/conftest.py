"""Session-wide test setup: a persistent JAX compilation cache.

XLA takes seconds to compile even a tiny train step on CPU, and the training
tests compile the same steps in this process and in subprocesses. A cache in a
temporary directory, shared through the environment, compiles each only once
per session. Set here, before any test compiles anything.
"""
import os
import shutil
import tempfile

import jax

_CACHE_DIR = tempfile.mkdtemp(prefix='linformer_jax_jit_cache_')
_SETTINGS = {
    'jax_compilation_cache_dir': _CACHE_DIR,
    'jax_persistent_cache_min_compile_time_secs': 0,
    'jax_persistent_cache_min_entry_size_bytes': 0,
}
for name, value in _SETTINGS.items():
  os.environ[name.upper()] = str(value)  # Inherited by subprocesses.
  jax.config.update(name, value)


def pytest_sessionfinish(session, exitstatus):
  shutil.rmtree(_CACHE_DIR, ignore_errors=True)
