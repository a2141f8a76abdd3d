"""Executes the colab/ notebooks headless at smoke size, as CI does.

Each notebook has a cell tagged `parameters`; a cell inserted after it (as
papermill would) sets the small sizes and a temporary workdir. The kernel runs
this interpreter (sys.executable) through a kernel spec written here, so a
`python3` spec installed elsewhere on the machine cannot pick another Python.
Needs nbclient, nbformat, ipykernel and matplotlib (requirements.txt); a
missing one fails here rather than skipping, so CI cannot pass without running
the notebooks.
"""
import json
import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(REPO, 'colab')
NOTEBOOKS = ('quickstart.ipynb', 'pretrain_mlm.ipynb', 'images_and_audio.ipynb')
# Per cell; a smoke-size cell takes seconds, the first import of TF or a compile tens of them.
CELL_TIMEOUT_S = 300


def _load(name):
  with open(os.path.join(COLAB, name)) as f:
    return nbformat.read(f, as_version=4)


def _with_parameters(nb, source):
  """A copy of nb with a cell running `source` right after the `parameters` cell."""
  nb = nbformat.from_dict(json.loads(json.dumps(nb)))
  index = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', ()))
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata['tags'] = ['injected-parameters']
  nb.cells.insert(index + 1, cell)
  return nb


def _execute(nb, kernel_dir, cwd):
  """Runs every cell; raises nbclient's CellExecutionError on the first error."""
  spec_dir = kernel_dir / 'python3'
  spec_dir.mkdir(parents=True, exist_ok=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'Python 3 (tests)', 'language': 'python'}))
  specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
  km = AsyncKernelManager(kernel_name='python3', kernel_spec_manager=specs)
  client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S,
                                   resources={'metadata': {'path': cwd}})
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


def test_quickstart(tmp_path):
  nb = _execute(_with_parameters(_load('quickstart.ipynb'), 'SMOKE = True'),
                tmp_path / 'kernels', COLAB)
  text = _outputs_text(nb)
  assert 'max |kernel - P V|' in text and 'row sums: [1. 1. 1. 1. 1. 1.]' in text
  assert _images(nb) == 1  # the timing plot


def test_pretrain_mlm(tmp_path):
  workdir = tmp_path / 'mlm'
  # The package's own sources as the corpus: building stdlib_docs would double the
  # time, and test_input_pipeline covers it.
  text_files = os.path.join(REPO, 'linformer_jax', '*.py')
  params = f'SMOKE = True\nWORKDIR = {str(workdir)!r}\nTEXT_FILES = {text_files!r}'
  nb = _execute(_with_parameters(_load('pretrain_mlm.ipynb'), params), tmp_path / 'kernels', COLAB)
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert records and 'train_loss' in records[0] and 'eval_loss' in records[-1]
  assert _images(nb) == 1  # the loss curve


def test_images_and_audio(tmp_path):
  workdir = tmp_path / 'runs'
  # From the repository root this time: the notebook must find configs/ from either place.
  nb = _execute(_with_parameters(_load('images_and_audio.ipynb'),
                                 f'SMOKE = True\nWORKDIR = {str(workdir)!r}'),
                tmp_path / 'kernels', REPO)
  for task in ('image', 'audio'):
    lines = (workdir / task / 'metrics.jsonl').read_text().splitlines()
    assert 'eval_accuracy' in json.loads(lines[-1])
  assert _images(nb) >= 3  # shapes, waveforms, accuracy curves
