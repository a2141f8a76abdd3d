"""`stdlib_docs`: a TFDS text corpus that ships with every Python install.

The docstrings and comments of the standard library of the running interpreter,
one example per source file. Building it reads only local files, so a fresh
machine can train the masked LM with no download and no network.

Prepare it (~20-40 s on 2 CPU cores, mostly `tokenize`; `data.text` also
does this on first use):

  python -c "from linformer_jax.data import stdlib_corpus as s; s.prepare('DATA_DIR')"

The corpus depends on the interpreter that prepared it: a different Python
version gives different text under the same dataset version.
"""
import ast
import io
import os
import sysconfig
import tokenize
import warnings

from etils import epath
import tensorflow_datasets as tfds

from linformer_jax.data import ordering

# Test packages are skipped: they are half of the stdlib's bytes (doubling the
# preparation time) and are full of deliberately odd code and test data.
# `encodings` is skipped because its comments are character tables, not prose
# (a fifth of the text otherwise).
_SKIP_DIRS = frozenset({'site-packages', 'dist-packages', '__pycache__', 'test', 'tests',
                        'idle_test', 'encodings'})


def stdlib_dir() -> str:
  return sysconfig.get_paths()['stdlib']


def source_files(root: str) -> list[str]:
  """Sorted paths (relative to `root`) of the `.py` files the corpus reads."""
  paths = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
    rel = os.path.relpath(dirpath, root)
    paths.extend(os.path.normpath(os.path.join(rel, f))
                 for f in filenames if f.endswith('.py'))
  return sorted(paths)


def _docstrings(node, out):
  """Appends (line, docstring) of `node` and every def/class nested in it."""
  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
    doc = ast.get_docstring(node)
    if doc:
      out.append((node.body[0].lineno, doc))
  for child in ast.iter_child_nodes(node):
    # Docstrings only live on statements; skipping expressions keeps this walk
    # ~10x cheaper than ast.walk.
    if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
      _docstrings(child, out)


def extract_text(source: bytes) -> str | None:
  """Docstrings and comments of one source file in line order; None if unparsable."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # SyntaxWarnings from old escape sequences.
      tree = ast.parse(source)
    pieces = []
    _docstrings(tree, pieces)
    pieces.extend((tok.start[0], tok.string)
                  for tok in tokenize.tokenize(io.BytesIO(source).readline)
                  if tok.type == tokenize.COMMENT)
  except (SyntaxError, ValueError, tokenize.TokenError):
    return None
  pieces.sort(key=lambda p: p[0])  # Stable: a docstring stays before same-line comments.
  text = '\n'.join(p[1] for p in pieces)
  # Docstrings may spell lone surrogates ('\udc80'), which UTF-8 cannot encode.
  return text.encode('utf-8', 'replace').decode('utf-8')


class StdlibDocs(tfds.core.GeneratorBasedBuilder):
  """Docstrings and comments of the Python standard library."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # TFDS would derive this through `importlib_resources`, a dependency missing
  # from our venv (download_and_prepare then fails); nothing else needs it.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            'Docstrings and comments (ast + tokenize) of the Python standard library of the '
            'interpreter that prepared it, one example per source file in sorted path order, '
            'test packages and codec tables excluded. ~5% of files (crc32 of the relative '
            'path) form the validation split.'),
        features=tfds.features.FeaturesDict({'text': tfds.features.Text()}),
        homepage='https://docs.python.org/3/library/',
        disable_shuffling=True,  # Keep sorted path order.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    root = stdlib_dir()
    paths = source_files(root)
    return {
        split: self._generate_examples(
            root, [p for p in paths if ordering.split_by_name(p) == split])
        for split in ('train', 'validation')
    }

  def _generate_examples(self, root, relpaths):
    for relpath in relpaths:
      with open(os.path.join(root, relpath), 'rb') as f:
        text = extract_text(f.read())
      if text:
        yield relpath, {'text': text}


def prepare(data_dir: str | None) -> StdlibDocs:
  """Returns the builder, preparing the data in `data_dir` first if missing.

  Never touches the network: there is nothing to download and the TFDS GCS
  mirror is not consulted.
  """
  builder = StdlibDocs(data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
