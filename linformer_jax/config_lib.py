"""Loading a config file by path, as train.py's --config does, with dotted overrides."""
import os
import runpy

import ml_collections


def load(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """`get_config()` of the config file at `path`, then `overrides` applied.

  overrides: {'seq_len': 64, 'model.emb_dim': 32, ...}. A key the config lacks
  is added (configs are unlocked), so a typo adds a key that the task's checks
  then reject or ignore; a value of the wrong type for an existing key raises.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise ValueError(f'config file {path!r} does not exist')
  config = runpy.run_path(path)['get_config']()
  for key, value in (overrides or {}).items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def sibling(config_file: str, name: str) -> ml_collections.ConfigDict:
  """`load` of the config `name` in the folder of `config_file` (a config's __file__).

  Config files are loaded by path, not imported as a package: this is how one
  derives from another, from any working directory.
  """
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))
