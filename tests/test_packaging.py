"""The package installs and imports with only jax and flax (the byte vocabulary too)."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_dependencies_are_only_jax_and_flax():
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  names = sorted(d.split('>')[0].split('=')[0].split('<')[0].strip() for d in project['dependencies'])
  assert names == ['flax', 'jax']


def test_import_works_without_tensorflow():
  # sys.modules[name] = None makes any `import name` fail, as if it were not installed.
  code = ("import sys\n"
          "for m in ('tensorflow', 'tensorflow_datasets', 'optax', 'orbax', 'ml_collections'):\n"
          "  sys.modules[m] = None\n"
          "import jax.numpy as jnp, linformer_jax as lj\n"
          "from linformer_jax.data import vocab\n"
          "assert vocab.decode(vocab.encode('héllo')) == 'héllo'\n"
          "x = jnp.ones((1, 8, 2, 4))\n"
          "assert lj.linear_attention(x, x, x).shape == (1, 8, 2, 4)\n"
          "assert 'tensorflow' not in [m for m, v in sys.modules.items() if v is not None]\n")
  subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT / 'tests')
