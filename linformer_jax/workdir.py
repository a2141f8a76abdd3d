"""The run directory (workdir): its writability, stored config and lock, and a params-only restore.

`prepare` creates the workdir and proves it writable; `load_config` rebuilds
the run's config; `restore_params` gives the latest checkpoint's parameters
(for `generate`). The checkpoint format is `checkpoints.py`'s; the metrics,
`metrics.py`'s.

workdir/config.json is the config of the first start, as flat dotted keys, and
the changes later starts accepted. A resumed run continues the checkpoint, so a
changed model, data or optimizer setting would silently mix two experiments (or,
for a shape, fail deep inside Orbax): `check_config` refuses it unless the key
is in SAFE_TO_CHANGE or named in `config.allow_changed` ('key,key,...').

workdir/lock names the process (pid, host) that runs there; a second run stops
at once. A lock whose process is gone (same host, no such pid) is taken over.
"""
import contextlib
import json
import os
import socket

from absl import logging
import ml_collections

from linformer_jax import checkpoints
from linformer_jax import parallel

CONFIG_FILE = 'config.json'
LOCK_FILE = 'lock'
# These decide when to log, evaluate and save, whether to join other processes
# and how the devices are laid out, not what is computed: a resumed run may
# change them freely. (Dropout masks follow the layout under pmap, whose masks
# already change with the device count; every mesh layout draws the same.)
SAFE_TO_CHANGE = ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                  'keep_checkpoints', 'distributed', 'allow_changed', 'parallelism', 'mesh')
_ABSENT = '<absent>'


def prepare(workdir: str) -> None:
  """Creates workdir and proves it writable, touching nothing already there."""
  probe = os.path.join(workdir, f'.write_test_{parallel.process_index()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'workdir {workdir!r} is not a writable directory: {e}') from e


def flatten(config) -> dict:
  """{dotted key: JSON value} of a ConfigDict (tuples become lists, as in the file)."""
  flat = {}

  def walk(prefix, node):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(f'{prefix}{key}.', value)
      else:
        flat[prefix + key] = value
  walk('', config.to_dict())
  return json.loads(json.dumps(flat, default=str))


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, NotADirectoryError):  # No workdir yet: prepare says why.
    return None


def _write_json(path, value):
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)  # Atomic: a kill leaves the old or the new file.


def check_config(workdir: str, config) -> dict:
  """The changes {key: (old, new)} from workdir's stored config, once all are allowed.

  Reads only. Returns {} if there is no stored config (a first start). Raises
  ValueError listing the refused keys, old -> new, and how to proceed.
  """
  stored = _read_json(os.path.join(workdir, CONFIG_FILE))
  if stored is None:
    return {}
  old, new = stored['config'], flatten(config)
  changes = {k: (old.get(k, _ABSENT), new.get(k, _ABSENT))
             for k in sorted(old.keys() | new.keys()) if old.get(k, _ABSENT) != new.get(k, _ABSENT)}
  allowed = {k.strip() for k in str(config.get('allow_changed') or '').split(',') if k.strip()}
  unknown = sorted(allowed - old.keys() - new.keys())
  if unknown:
    raise ValueError(f'config.allow_changed names {unknown}, which are not config keys.')
  refused = [k for k in changes if k not in SAFE_TO_CHANGE and k not in allowed]
  if refused:
    lines = '\n'.join(f'  {k}: {changes[k][0]!r} -> {changes[k][1]!r}' for k in refused)
    raise ValueError(
        f'workdir {workdir!r} holds a run with another config ({CONFIG_FILE} there):\n{lines}\n'
        f'Resuming would continue its checkpoint under the new settings. Start a new run with '
        f'a new --workdir, or, to continue this one anyway (for unchanged shapes only), add '
        f'--config.allow_changed={",".join(refused)}')
  return changes


def record_config(workdir: str, config, changes: dict, step: int) -> None:
  """Stores the config at a first start, or the accepted `changes` made at `step`."""
  path = os.path.join(workdir, CONFIG_FILE)
  stored = _read_json(path)
  if stored is not None and not changes:
    return
  history = [] if stored is None else stored.get('changes', [])
  if changes:
    history.append({'step': step, 'keys': {k: list(v) for k, v in changes.items()}})
    logging.warning('Config changed at step %d, as allowed: %s', step,
                    ', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in changes.items()))
  _write_json(path, {'config': flatten(config), 'changes': history})


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in `workdir`: config.json's, with its recorded changes applied."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir!r} does not exist (or is not a directory).')
  if not os.path.exists(path):
    raise ValueError(f'workdir {workdir!r} holds no {CONFIG_FILE}: not a training '
                     f'workdir, or its run never started (train.py writes it at the first start).')
  with open(path) as f:
    stored = json.load(f)
  flat = dict(stored['config'])
  for change in stored.get('changes', []):
    flat.update({k: new for k, (_, new) in change['keys'].items()})
  config = ml_collections.ConfigDict()
  for key, value in flat.items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      if parent not in node:
        node[parent] = ml_collections.ConfigDict()
      node = node[parent]
    node[name] = value
  return config


# ----------------------------------------------------------------------------- lock


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True


def _owner(path):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError:
    return {}  # Being written this instant, or damaged.


@contextlib.contextmanager
def lock(workdir: str, *, enabled: bool = True):
  """Holds workdir/lock while the block runs; RuntimeError if another run holds it.

  Only one process of a multi-process run (process 0) should take it.
  """
  if not enabled:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  me = {'pid': os.getpid(), 'host': socket.gethostname()}
  _acquire(path, me)
  try:
    yield
  finally:
    if _owner(path) == me:
      os.remove(path)


def _acquire(path, me):
  for _ in range(3):  # Retried after taking over a stale lock, or if one vanished.
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      owner = _owner(path)
      if owner is None:
        continue
      if owner.get('host') == me['host'] and isinstance(owner.get('pid'), int) and (
          not _alive(owner['pid'])):
        logging.warning('Taking over the stale lock %s of process %d, which is gone.', path,
                        owner['pid'])
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        continue
      who = (f'process {owner["pid"]} on host {owner["host"]}' if owner
             else 'a process that is starting (or left it unreadable)')
      raise RuntimeError(
          f'Another run is using workdir {os.path.dirname(path)!r}: {who} holds {path}. '
          f'Wait for it or stop it, or use another --workdir. If no run uses this workdir '
          f'(a process on another host, or a reused pid), delete {path}.') from None
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    return
  raise RuntimeError(f'Could not take the lock {path}: other runs keep taking it.')


# ----------------------------------------------------------------------------- parameters


def restore_params(workdir: str, params_target):
  """(params, step) of the latest checkpoint in workdir; ValueError if there is none.

  params_target: the params' tree of jax.ShapeDtypeStruct, or a function
  returning it, called only once a checkpoint is found. Only the parameters
  are read (the optimizer state stays on disk); nothing is written.
  """
  folder = os.path.join(os.path.abspath(workdir), checkpoints.CHECKPOINT_DIR)
  if not os.path.isdir(folder):
    raise ValueError(f'workdir {workdir!r} has no {checkpoints.CHECKPOINT_DIR}/ folder: nothing '
                     f'to restore. Give the workdir of a training run that saved a checkpoint.')
  manager = checkpoints.create_manager(workdir, keep=1)
  try:
    step = manager.latest_step()
    if step is None:
      raise ValueError(f'{folder} holds no checkpoint yet: nothing to restore. Give the workdir '
                       f'of a training run that saved a checkpoint.')
    target = params_target() if callable(params_target) else params_target
    return checkpoints.restore_params(manager, target, step), step
  finally:
    manager.close()
