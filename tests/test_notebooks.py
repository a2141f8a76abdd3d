"""The colab/ notebooks: committed clean, and run headless as Colab would run them.

Fast tests: each notebook is committed without outputs, with one `parameters` cell before
its set-up cell; run from a checkout with everything installed, the set-up cell installs
nothing; a clone that fails stops the cell with an error that names REPO_URL.

Slow tests run each notebook at smoke size the way a fresh Colab runtime would: an empty
working folder, and a kernel in a virtual environment built here with only what every Colab
runtime ships (jax, flax, ipykernel, matplotlib) and a stub `google.colab`, without
linformer_jax; REPO_URL is this repository as `file://` (the clone gets the last commit:
commit first). The notebook's own set-up cell must clone and install the rest (quickstart's
folder also holds an old clone named linformer_jax, an empty namespace package). quickstart
and pretrain_mlm run as on a TPU runtime (no TensorFlow), images_and_audio as on a GPU
runtime (TensorFlow, TFDS and TensorBoard preinstalled: it must not add tensorflow-cpu);
the training notebooks share one set-up cell (asserted), so each runtime's path is run once.
pip versions are pinned to requirements.txt (PIP_CONSTRAINT), so wheels come from this
machine's index and pip cache, not whatever PyPI has that day.

Cost of the slow tests, run together on 2 cores shared with other jobs (load ~8): 7 min,
of which 1.2 build the environment, 0.7 run quickstart, 1.9 pretrain_mlm (with its ~40 s
install of the TensorFlow stack), 1.1 images_and_audio, and up to 2 delete the environment's
2.6 GB at the end. Run alone, images_and_audio first installs the GPU runtime's TensorFlow.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import types

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(REPO, 'colab')
REQUIREMENTS = os.path.join(REPO, 'requirements.txt')
NOTEBOOKS = ('quickstart.ipynb', 'pretrain_mlm.ipynb', 'images_and_audio.ipynb', 'generate.ipynb')
# Per cell; a smoke-size cell takes seconds, installing TensorFlow or a compile tens of them.
CELL_TIMEOUT_S = 300
# Preinstalled on every Colab runtime (as far as these notebooks care).
COLAB_PREINSTALLED = ('jax', 'jaxlib', 'flax', 'ipykernel', 'matplotlib')
# Also preinstalled on Colab's GPU runtimes, not on its TPU runtimes.
GPU_PREINSTALLED = ('tensorflow-cpu', 'tensorflow-datasets', 'tensorboard')
# A bad REPO_URL must stop the set-up cell.
MISSING_URL = 'file:///nonexistent/linformer_jax'


def _load(name):
  with open(os.path.join(COLAB, name)) as f:
    return nbformat.read(f, as_version=4)


def _setup_index(nb):
  """Index of the set-up cell: the one that installs the package."""
  return next(i for i, c in enumerate(nb.cells) if 'def installed(' in c.source)


def _with_parameters(nb, source, through_setup=False):
  """A copy of nb with a cell running `source` right after the `parameters` cell.

  through_setup: drop the cells after the set-up cell.
  """
  nb = nbformat.from_dict(json.loads(json.dumps(nb)))
  if through_setup:
    nb.cells = nb.cells[:_setup_index(nb) + 1]
  index = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', ()))
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata['tags'] = ['injected-parameters']
  nb.cells.insert(index + 1, cell)
  return nb


def _execute(nb, kernel_dir, cwd, python=sys.executable, env=None):
  """Runs every cell in a kernel of `python` with `env` added to this process's environment.

  Raises nbclient's CellExecutionError on the first error. The kernel spec is written here,
  so a `python3` spec installed elsewhere on the machine cannot pick another Python.
  """
  spec_dir = kernel_dir / 'python3'
  spec_dir.mkdir(parents=True, exist_ok=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [python, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'Python 3 (tests)', 'language': 'python', 'env': env or {}}))
  specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
  km = AsyncKernelManager(kernel_name='python3', kernel_spec_manager=specs)
  client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S,
                                   resources={'metadata': {'path': str(cwd)}})
  client.execute()
  return nb


def _outputs_text(nb):
  return '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                   for o in c.get('outputs', ()) if o.get('output_type') == 'stream')


def _images(nb):
  return sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code'
             for o in c.get('outputs', ()))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_clean_and_parameterized(name):
  nb = _load(name)
  nbformat.validate(nb)
  assert nb.nbformat == 4 and nb.metadata.kernelspec.name == 'python3'
  code = [c for c in nb.cells if c.cell_type == 'code']
  # Committed without outputs: diffs stay readable and nothing stale is shown.
  assert all(not c.outputs and c.execution_count is None for c in code)
  tagged = [c for c in code if 'parameters' in c.metadata.get('tags', ())]
  assert len(tagged) == 1 and 'SMOKE = False' in tagged[0].source
  # REPO_URL is a parameter, read by the set-up cell after it.
  assert 'REPO_URL = ' in tagged[0].source and nb.cells.index(tagged[0]) < _setup_index(nb)


def test_training_notebooks_share_the_setup_cell():
  # The slow tests run this cell's TPU path in one notebook and its GPU path in the other.
  pretrain = _load('pretrain_mlm.ipynb')
  for other in ('images_and_audio.ipynb', 'generate.ipynb'):
    nb = _load(other)
    assert pretrain.cells[_setup_index(pretrain)].source == nb.cells[_setup_index(nb)].source


# PIP_DRY_RUN: should the cell wrongly try to install, it must not touch this environment.
@pytest.mark.parametrize('name, cwd', [('quickstart.ipynb', COLAB), ('pretrain_mlm.ipynb', COLAB),
                                       ('images_and_audio.ipynb', REPO)])
def test_setup_uses_the_checkout_and_installs_nothing(name, cwd, tmp_path):
  nb = _execute(_with_parameters(_load(name), f'REPO_URL = {MISSING_URL!r}', through_setup=True),
                tmp_path / 'kernels', cwd, env={'PIP_DRY_RUN': '1'})
  text = _outputs_text(nb)
  assert 'pip install' not in text and 'linformer_jax from ' in text
  if name != 'quickstart.ipynb':
    assert f'repository: {REPO}\n' in text  # found from colab/ and from the repository root


def test_failed_clone_stops_the_setup_cell(tmp_path):
  nb = _with_parameters(_load('pretrain_mlm.ipynb'), f'REPO_URL = {MISSING_URL!r}',
                        through_setup=True)
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    _execute(nb, tmp_path / 'kernels', tmp_path, env={'PIP_DRY_RUN': '1'})
  assert error.value.ename == 'RuntimeError'
  assert 'git clone' in error.value.evalue and 'REPO_URL' in error.value.evalue
  assert not (tmp_path / 'linformer-jax' / 'configs').exists()


# Slow: a fresh Colab runtime.


def _canonical(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def _in_env(python, *args, **env):
  """Runs `python args` as the environment alone sees itself: from its bin/ folder (not this
  checkout, whose linformer_jax.egg-info `pip install -e .` left there), without PYTHONPATH."""
  clean = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  return subprocess.run([python, *args], check=True, capture_output=True, text=True,
                        cwd=os.path.dirname(python), env={**clean, **env}).stdout


def _pip(python, *args):
  _in_env(python, '-m', 'pip', *args, PIP_CONSTRAINT=REQUIREMENTS)


def _distributions(python):
  """{canonical name: version} of what is installed for `python`."""
  listing = _in_env(python, '-m', 'pip', 'list', '--format=json')
  return {_canonical(d['name']): d['version'] for d in json.loads(listing)}


@pytest.fixture(scope='module')
def colab(tmp_path_factory):
  """A virtual environment with Colab's preinstalled packages and a stub google.colab."""
  root = tmp_path_factory.mktemp('colab')
  venv = root / 'venv'
  # --upgrade-deps: Colab's pip is recent; Python 3.11's bundled pip 23.2 rejects git+file://.
  subprocess.run([sys.executable, '-m', 'venv', '--upgrade-deps', str(venv)], check=True,
                 capture_output=True)
  python = str(venv / 'bin' / 'python')
  _pip(python, 'install', '-q', *COLAB_PREINSTALLED)
  stub = root / 'stub' / 'google' / 'colab'  # no google/__init__.py: google.protobuf still imports
  stub.mkdir(parents=True)
  (stub / '__init__.py').write_text('"""Stands in for the module of a Colab runtime."""\n')
  # PYTHONPATH replaces this process's own, which may hold this checkout.
  kernel_env = {'PYTHONPATH': str(root / 'stub'), 'PIP_CONSTRAINT': REQUIREMENTS}
  yield types.SimpleNamespace(python=python, base=_distributions(python), kernel_env=kernel_env)
  shutil.rmtree(venv, ignore_errors=True)


def _as_runtime(colab, runtime):
  """Makes the environment a fresh 'TPU' or 'GPU' runtime; returns its distributions."""
  have = _distributions(colab.python)
  if runtime == 'TPU':
    extra = set(have) - set(colab.base)
  else:  # Keeps the TensorFlow stack an earlier notebook installed.
    extra = set(have) & {'linformer-jax', 'ml-collections'}
  if extra:
    _pip(colab.python, 'uninstall', '-y', *sorted(extra))
  if runtime == 'GPU':
    _pip(colab.python, 'install', '-q', *GPU_PREINSTALLED)
  return _distributions(colab.python)


def _run_on_colab(colab, runtime, name, parameters, tmp_path, old_clone=False):
  """Runs notebook `name` in an empty working folder; returns it and what it installed.

  old_clone: the folder holds a clone named linformer_jax, as earlier notebooks made one,
  which imports as an empty namespace package while the package is not installed.
  """
  before = _as_runtime(colab, runtime)
  assert 'linformer-jax' not in before and ('tensorflow-cpu' in before) == (runtime == 'GPU')
  content = tmp_path / 'content'
  content.mkdir()
  if old_clone:
    (content / 'linformer_jax').mkdir()
    (content / 'linformer_jax' / 'README.md').write_text('An old clone.\n')
  nb = _execute(_with_parameters(_load(name), f'REPO_URL = {"file://" + REPO!r}\n{parameters}'),
                tmp_path / 'kernels', content, python=colab.python, env=colab.kernel_env)
  after = _distributions(colab.python)
  # Nothing the runtime had was upgraded or downgraded.
  assert {n: after.get(n) for n in before} == before
  text = _outputs_text(nb)
  site_packages = _in_env(colab.python, '-c',
                          'import sysconfig; print(sysconfig.get_path("purelib"))').strip()
  assert f'linformer_jax from {site_packages}/linformer_jax\n' in text  # the installed copy
  return nb, text, set(after) - set(before)


@pytest.mark.slow
def test_failed_install_stops_quickstart_on_colab(colab, tmp_path):
  # First of the slow tests: the environment is then fresh and needs no clean-up.
  _as_runtime(colab, 'TPU')
  nb = _with_parameters(_load('quickstart.ipynb'), f'REPO_URL = {MISSING_URL!r}',
                        through_setup=True)
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    _execute(nb, tmp_path / 'kernels', tmp_path, python=colab.python, env=colab.kernel_env)
  assert error.value.ename == 'RuntimeError'
  assert 'pip install' in error.value.evalue and 'REPO_URL' in error.value.evalue
  assert 'linformer-jax' not in _distributions(colab.python)


@pytest.mark.slow
def test_quickstart_on_colab(colab, tmp_path):
  nb, text, installed = _run_on_colab(colab, 'TPU', 'quickstart.ipynb', 'SMOKE = True', tmp_path,
                                      old_clone=True)
  assert installed == {'linformer-jax'}  # the kernels need nothing else
  assert 'max |kernel - P V|' in text and 'row sums: [1. 1. 1. 1. 1. 1.]' in text
  assert _images(nb) == 1  # the timing plot


@pytest.mark.slow
def test_pretrain_mlm_on_colab_tpu(colab, tmp_path):
  workdir = tmp_path / 'mlm'
  # The package's own sources as the corpus: building stdlib_docs would double the
  # time, and test_data_text covers it.
  text_files = os.path.join(REPO, 'linformer_jax', '*.py')
  params = f'SMOKE = True\nWORKDIR = {str(workdir)!r}\nTEXT_FILES = {text_files!r}'
  nb, text, installed = _run_on_colab(colab, 'TPU', 'pretrain_mlm.ipynb', params, tmp_path)
  assert installed >= {'linformer-jax', 'ml-collections', *GPU_PREINSTALLED}
  assert f"repository: {tmp_path / 'content' / 'linformer-jax'}\n" in text
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert records[0]['step'] == 0 and 'baseline_bigram_loss' in records[0]  # the baselines
  assert 'train_loss' in records[1] and 'eval_loss' in records[-1]
  assert _images(nb) == 1  # the loss curve


@pytest.mark.slow
def test_images_and_audio_on_colab_gpu(colab, tmp_path):
  workdir = tmp_path / 'runs'
  nb, text, installed = _run_on_colab(colab, 'GPU', 'images_and_audio.ipynb',
                                      f'SMOKE = True\nWORKDIR = {str(workdir)!r}', tmp_path)
  assert installed == {'linformer-jax', 'ml-collections'}  # TensorFlow was there: no tensorflow-cpu
  for task in ('image', 'audio'):
    lines = (workdir / task / 'metrics.jsonl').read_text().splitlines()
    assert 'eval_accuracy' in json.loads(lines[-1])
  assert _images(nb) >= 3  # shapes, waveforms, accuracy curves


@pytest.mark.slow
def test_generate_on_colab_gpu(colab, tmp_path):
  workdir = tmp_path / 'lm'
  text_files = os.path.join(REPO, 'linformer_jax', '*.py')
  params = (f'SMOKE = True\nWORKDIR = {str(workdir)!r}\nTEXT_FILES = {text_files!r}\n'
            "PROMPT = 'def '\nNUM_TOKENS = 20")
  _, text, installed = _run_on_colab(colab, 'GPU', 'generate.ipynb', params, tmp_path)
  assert installed == {'linformer-jax', 'ml-collections'}
  assert 'step 8, 20 new bytes:\ndef ' in text  # the trained checkpoint, then the text
