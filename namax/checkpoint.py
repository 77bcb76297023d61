"""Checkpoints that refuse damage: safetensors files written atomically and verified on load.

A checkpoint is one file, ``<directory>/step_<step:06d>.safetensors``, holding any number of
named pytrees of NamedArrays and arrays (``{"params": ..., "opt_state": ...}``): tensor
``"params/.blocks.weight"`` is the leaf at that key path (``jax.tree_util.keystr``). The
header metadata holds the step, each NamedArray leaf's axis names, a CRC-32 of every
tensor's bytes, the run's configuration, any JSON-able ``extra``, and a CRC-32 of the
metadata itself. Loading needs templates of the same structure (e.g. a freshly built model,
or ``jax.eval_shape`` of one); a tensor stored under another layout (the same axis names in
another order) is transposed by name.

>>> import tempfile, namax as nx
>>> tree = {"w": nx.ones((nx.Axis("embed", 2), nx.Axis("mlp", 3)))}
>>> with tempfile.TemporaryDirectory() as d:
...     _ = save(d, 5, {"params": tree}, config={"lr": 0.1})
...     step, trees, meta = restore(d, {"params": tree}, config={"lr": 0.1})
>>> step, trees["params"]["w"].axis_names, meta["config"]
(5, ('embed', 'mlp'), {'lr': 0.1})

Guarantees:

- **Atomic and durable saves.** :func:`save` writes a temporary file in the same folder
  (``.step_<N>.safetensors.<pid>.<random>.tmp``), flushes it to disk (``fsync``), renames
  it into place with ``os.replace``, then flushes the folder (``fsync``). A crash at any
  point leaves the checkpoints that were there before, loadable, plus possibly the complete
  new one: never part of a file under a ``step_*`` name. With ``keep=N`` the older
  checkpoints are deleted only once the new one is durable. One writer per folder: a save
  also removes temporary files left by crashed saves.
- **Damage is refused.** :func:`load` raises :class:`CheckpointError` naming the file (and
  the tensor, where there is one) for an empty, truncated or unparsable file, metadata that
  does not match its checksum, a tensor whose bytes do not match its checksum, a file whose
  name and metadata disagree on the step, a tensor missing from the file or present in it but
  not in the template, a tensor of another shape, dtype or axis names than the template's,
  and a tensor holding a NaN or infinity (unless ``allow_nonfinite=True``; :func:`save`
  refuses those too).
- **Fallback.** :func:`restore` tries a folder's checkpoints newest first. Each unusable one
  is reported in one warning line on the ``namax.checkpoint`` logger (``skipping
  /ckpt/step_000012.safetensors: checksum mismatch in tensor 'params/.w' (its bytes are
  damaged)``) and the next older
  one is tried; if none is usable the error lists every file with what was wrong with it.
- **Same run.** ``save(config=...)`` stores the run's configuration (a JSON-able dict);
  ``load``/``restore`` with ``config=`` raise :class:`ConfigMismatchError` naming each key
  whose value differs (``old -> new``), unless the key is in ``allow_config_change``. Every
  stored key is compared, so leave out of ``config`` (or always allow) what may change
  between a run and its continuation: logging frequency, progress bars, device counts. A
  configuration mismatch is not damage: ``restore`` does not fall back past it, it raises.

Error handling is by exception type (``SafetensorError``, ``OSError``, ``ValueError`` from
JSON decoding), never by the text of an exception. In a multi-process run every process must
call :func:`save` (gathering sharded arrays is collective) and process 0 writes.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import secrets
import zlib
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as _serialize

from .named import NamedArray, is_named

FORMAT = "namax/1"
_NAME = re.compile(r"^step_(\d+)\.safetensors$")
_TMP = re.compile(r"^\.step_\d+\.safetensors\..+\.tmp$")
_META_KEYS = ("format", "step", "axes", "checksums", "config", "extra", "metadata_crc32")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()  # in ConfigMismatchError.changes: the key is absent on that side
logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, or not what the template or run describes.

    >>> err = CheckpointError("/ckpt/step_000003.safetensors", "empty file")
    >>> str(err), err.reason
    ('/ckpt/step_000003.safetensors: empty file', 'empty file')

    ``path`` is the file (or, when :func:`restore` found no usable file, the folder) and
    ``reason`` what is wrong with it, on one line.
    """

    def __init__(self, path: str | os.PathLike, reason: str, hint: str = ""):
        self.path = pathlib.Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}{hint}")


class ConfigMismatchError(CheckpointError):
    """The checkpoint was saved by a run with another configuration.

    >>> err = ConfigMismatchError("/ckpt/step_000003.safetensors", {"steps": (300, 400)})
    >>> err.changes
    {'steps': (300, 400)}
    >>> print(err.reason)
    saved by a run with another configuration: steps 300 -> 400
    >>> str(err).endswith("(to continue anyway: allow_config_change={'steps'})")
    True

    ``changes`` maps each differing key to ``(stored value, new value)``; a key absent on
    one side is :data:`MISSING` there (shown as ``<missing>``).
    """

    def __init__(self, path: str | os.PathLike, changes: Mapping[str, tuple[Any, Any]]):
        self.changes = dict(changes)
        described = ", ".join(f"{k} {_show(old)} -> {_show(new)}" for k, (old, new) in self.changes.items())
        allow = "{" + ", ".join(repr(k) for k in self.changes) + "}"
        super().__init__(path, f"saved by a run with another configuration: {described}",
                         f" (to continue anyway: allow_config_change={allow})")


class Loaded(NamedTuple):
    """What :func:`load` and :func:`restore` return: ``(step, trees, metadata)``.

    >>> Loaded(3, {}, {"step": 3}).step
    3

    ``metadata`` is :func:`read_metadata`'s dict plus ``path`` (the file used) and, from
    :func:`restore`, ``skipped`` (each newer unusable file -> why).
    """

    step: int
    trees: dict[str, Any]
    metadata: dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------
def _show(value: Any) -> str:
    return "<missing>" if value is MISSING else json.dumps(value)


def _one_line(error: BaseException) -> str:
    """An exception's text on one line (for the one-line skip report)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _entries(prefix: str, tree: Any) -> list[tuple[str, Any, Optional[tuple[str, ...]]]]:
    """``(tensor name, array, axis names or None)`` for every array leaf of ``tree``."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_named)[0]:
        key = f"{prefix}/{jax.tree_util.keystr(path)}"
        if isinstance(leaf, NamedArray):
            out.append((key, leaf.array, leaf.axis_names))
        else:
            out.append((key, leaf, None))
    return out


def _to_host(x: Any) -> np.ndarray:
    """The whole value of ``x`` as NumPy, gathering shards from every process if needed."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _crc(array: np.ndarray) -> str:
    """CRC-32 of the array's bytes in C order, as 8 hex digits."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return f"{zlib.crc32(flat) & 0xFFFFFFFF:08x}"


def _metadata_crc(metadata: Mapping[str, str]) -> str:
    body = json.dumps({k: v for k, v in metadata.items() if k != "metadata_crc32"}, sort_keys=True)
    return f"{zlib.crc32(body.encode()) & 0xFFFFFFFF:08x}"


def _nonfinite(array: np.ndarray) -> int:
    """How many NaNs and infinities ``array`` holds (0 for integer and boolean arrays)."""
    if not jnp.issubdtype(array.dtype, jnp.inexact):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def _json_config(config: Optional[Mapping[str, Any]], what: str) -> Optional[dict[str, Any]]:
    """``config`` as it reads back from JSON (tuples become lists), or a ValueError saying why not."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(f"{what}: config must be a dict of JSON-able values, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(dict(config)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: config is not JSON-able ({e})") from e


def _write_synced(path: pathlib.Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``data``, flushed to disk before returning."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: str | os.PathLike) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: pathlib.Path, why: str) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        logger.warning("could not remove %s (%s): %s", path, why, _one_line(e))


# --- public API ---------------------------------------------------------------------------------
def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, pathlib.Path]]:
    """``(step, path)`` of every ``step_<N>.safetensors`` file in ``directory``, oldest first.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for step in (10, 2):
    ...         _ = save(d, step, {"x": np.zeros(2)})
    ...     [(step, path.name) for step, path in list_checkpoints(d)]
    [(2, 'step_000002.safetensors'), (10, 'step_000010.safetensors')]

    Files are not opened (see :func:`restore` for the newest usable one); a missing folder
    has none.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest(directory: str | os.PathLike) -> Optional[pathlib.Path]:
    """The checkpoint file with the highest step in ``directory``, or None; not verified.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     print(latest(d))
    ...     latest(save(d, 7, {"x": np.zeros(2)}).parent).name
    None
    'step_000007.safetensors'
    """
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save(directory: str | os.PathLike, step: int, trees: Mapping[str, Any], extra: Optional[Mapping] = None, *,
         config: Optional[Mapping[str, Any]] = None, keep: Optional[int] = None,
         allow_nonfinite: bool = False) -> pathlib.Path:
    """Write ``directory/step_<step>.safetensors`` atomically and durably; return its path.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for step in range(1, 5):
    ...         path = save(d, step, {"params": {"w": np.full(3, step, np.float32)}}, keep=2)
    ...     path.name, [step for step, _ in list_checkpoints(d)]
    ('step_000004.safetensors', [3, 4])

    ``trees`` maps a prefix (no ``/``) to a pytree of NamedArrays and arrays; ``config`` is
    the run's configuration, compared on load; ``extra`` any other JSON-able metadata.
    A tensor holding NaN or infinity raises ``ValueError`` naming it, unless
    ``allow_nonfinite=True``. ``keep=N`` then deletes all but the N newest checkpoints with a
    step up to ``step`` (files with higher steps, e.g. ones :func:`restore` skipped as
    damaged, are left for inspection and replaced when the run reaches their step).

    Every process must call this (gathering sharded arrays is collective); process 0
    writes. Sequence: write a temporary file in ``directory``, ``fsync`` it, ``os.replace``
    it to its name, ``fsync`` the folder, then delete what ``keep`` drops.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"save: step must be an int >= 0, got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"save: keep must be None (keep all) or an int >= 1, got {keep!r}")
    step = int(step)
    directory = pathlib.Path(directory)
    path = directory / f"step_{step:06d}.safetensors"
    config = _json_config(config, f"save {path}")
    try:
        extra_json = json.dumps(dict(extra or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"save {path}: extra is not JSON-able ({e})") from e
    tensors: dict[str, np.ndarray] = {}
    axes: dict[str, list[str]] = {}
    sums: dict[str, str] = {}
    for prefix, tree in trees.items():
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"save {path}: tree names must be non-empty strings without '/', got {prefix!r}")
        for key, value, names in _entries(prefix, tree):
            array = np.array(_to_host(value), order="C")  # (ascontiguousarray would make scalars 1-d)
            if not allow_nonfinite and (bad := _nonfinite(array)):
                raise ValueError(f"save {path}: tensor {key!r} holds {bad} non-finite value(s) (NaN or infinity); "
                                 f"refusing to save it (allow_nonfinite=True saves it anyway)")
            tensors[key] = array
            sums[key] = _crc(array)
            if names is not None:
                axes[key] = list(names)
    metadata = {"format": FORMAT, "step": str(step), "axes": json.dumps(axes), "checksums": json.dumps(sums),
                "config": json.dumps(config), "extra": extra_json}
    metadata["metadata_crc32"] = _metadata_crc(metadata)
    if jax.process_index() != 0:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    data = _serialize(tensors, metadata=metadata)  # (safetensors' save_file makes 0600 files, without fsync)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp, "temporary file of a failed save")
        raise
    _fsync_dir(directory)
    # the new checkpoint is durable: now drop what keep= says and temporaries of crashed saves
    for leftover in directory.iterdir():
        if _TMP.match(leftover.name):
            _remove(leftover, "left by an interrupted save")
    if keep is not None:
        older = [p for s, p in list_checkpoints(directory) if s <= step]
        for old in older[:-keep]:
            _remove(old, f"keep={keep}")
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's header, verified: ``step``, ``axes``, ``checksums``, ``config``, ``extra``, ``format``.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     meta = read_metadata(save(d, 3, {"x": np.zeros(2)}, extra={"kind": "full"}))
    >>> meta["step"], meta["extra"], meta["config"], sorted(meta["checksums"])
    (3, {'kind': 'full'}, None, ['x/'])

    Raises :class:`CheckpointError` (naming the file) if it is empty, not a safetensors
    file, not a namax checkpoint, its metadata does not match its checksum, or its name
    says another step than its metadata.
    """
    path = pathlib.Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(path, "empty file")
        with safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
    except SafetensorError as e:
        raise CheckpointError(path, f"not a readable safetensors file ({_one_line(e)})") from e
    except OSError as e:
        raise CheckpointError(path, f"cannot read the file ({_one_line(e)})") from e
    if raw.get("format") != FORMAT:
        raise CheckpointError(path, f"not a namax checkpoint (format {raw.get('format')!r}, expected {FORMAT!r})")
    if missing := [k for k in _META_KEYS if k not in raw]:
        raise CheckpointError(path, f"metadata lacks {', '.join(missing)} (the header is damaged)")
    if raw["metadata_crc32"] != _metadata_crc(raw):
        raise CheckpointError(path, "metadata checksum mismatch (the header is damaged)")
    try:
        meta = {"format": raw["format"], "step": int(raw["step"])}
        for key in ("axes", "checksums", "config", "extra"):
            meta[key] = json.loads(raw[key])
    except ValueError as e:  # int() or json.JSONDecodeError
        raise CheckpointError(path, f"metadata does not decode ({_one_line(e)})") from e
    if not (isinstance(meta["axes"], dict) and isinstance(meta["checksums"], dict) and isinstance(meta["extra"], dict)
            and (meta["config"] is None or isinstance(meta["config"], dict))):
        raise CheckpointError(path, "metadata has the wrong structure")
    if (m := _NAME.match(path.name)) and int(m.group(1)) != meta["step"]:
        raise CheckpointError(path, f"the file name says step {int(m.group(1))}, its metadata step {meta['step']}")
    meta["path"] = str(path)
    return meta


def _check_config(path: pathlib.Path, stored: Optional[dict], config: Optional[Mapping],
                  allow_config_change: Iterable[str]) -> None:
    config = _json_config(config, f"load {path}")
    if config is None:
        return
    allowed = {allow_config_change} if isinstance(allow_config_change, str) else set(allow_config_change)
    stored = stored or {}
    changes = {}
    for key in list(stored) + [k for k in config if k not in stored]:
        old, new = stored.get(key, MISSING), config.get(key, MISSING)
        if old != new and key not in allowed:
            changes[key] = (old, new)
    if changes:
        raise ConfigMismatchError(path, changes)


def _read_trees(path: pathlib.Path, meta: dict, templates: Mapping[str, Any], allow_nonfinite: bool) -> dict[str, Any]:
    out = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            stored = set(f.keys())
            if unchecked := sorted(stored - set(meta["checksums"])):
                raise CheckpointError(path, f"tensor {unchecked[0]!r} has no checksum (the header is damaged)")
            for prefix, template in templates.items():
                leaves, treedef = jax.tree_util.tree_flatten(template, is_leaf=is_named)
                entries = _entries(prefix, template)
                wanted = {key for key, _, _ in entries}
                if missing := [key for key, _, _ in entries if key not in stored]:
                    raise CheckpointError(path, f"no tensor {missing[0]!r} ({len(missing)} of the template's "
                                                f"{len(entries)} '{prefix}' tensors missing; "
                                                f"the file has {len(stored)})")
                if extra := sorted(k for k in stored if k.startswith(prefix + "/") and k not in wanted):
                    raise CheckpointError(path, f"tensor {extra[0]!r} is not in the template "
                                                f"({len(extra)} such tensor(s))")
                new = []
                for (key, value, names), leaf in zip(entries, leaves):
                    array = f.get_tensor(key)
                    if _crc(array) != meta["checksums"][key]:
                        raise CheckpointError(path, f"checksum mismatch in tensor {key!r} (its bytes are damaged)")
                    if not allow_nonfinite and (bad := _nonfinite(array)):
                        raise CheckpointError(path, f"tensor {key!r} holds {bad} non-finite value(s) (NaN or infinity; "
                                                    f"allow_nonfinite=True loads it anyway)")
                    stored_names = meta["axes"].get(key)
                    if names is not None and stored_names is not None and tuple(stored_names) != names:
                        if sorted(stored_names) != sorted(names):
                            raise CheckpointError(path, f"tensor {key!r} has axes {stored_names}, "
                                                        f"the template wants {list(names)}")
                        # saved under another layout: the names say which dim is which
                        array = np.transpose(array, [list(stored_names).index(n) for n in names])
                    if array.shape != tuple(value.shape) or array.dtype != np.dtype(value.dtype):
                        raise CheckpointError(path, f"tensor {key!r} is {array.dtype}{list(array.shape)}, "
                                                    f"the template wants {np.dtype(value.dtype)}{list(value.shape)}")
                    new.append(NamedArray(array, leaf.axes) if isinstance(leaf, NamedArray) else array)
                out[prefix] = jax.tree_util.tree_unflatten(treedef, new)
    except SafetensorError as e:
        raise CheckpointError(path, f"not a readable safetensors file ({_one_line(e)})") from e
    except OSError as e:
        raise CheckpointError(path, f"cannot read the file ({_one_line(e)})") from e
    return out


def load(path: str | os.PathLike, templates: Mapping[str, Any] | Callable[[dict], Mapping[str, Any]], *,
         config: Optional[Mapping[str, Any]] = None, allow_config_change: Iterable[str] = (),
         allow_nonfinite: bool = False) -> Loaded:
    """``(step, trees, metadata)`` of one checkpoint file: each template's leaves replaced by the stored tensors.

    >>> import tempfile, namax as nx
    >>> w = nx.arange(nx.Axis("embed", 3)) * 1.0
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save(d, 2, {"params": {"w": w}}, config={"seed": 0})
    ...     step, trees, meta = load(path, {"params": {"w": w}}, config={"seed": 0})
    ...     try:
    ...         load(path, {"params": {"w": w}}, config={"seed": 1})
    ...     except ConfigMismatchError as e:
    ...         print(e.reason, e.changes)
    saved by a run with another configuration: seed 0 -> 1 {'seed': (0, 1)}
    >>> step, trees["params"]["w"].axis_names, trees["params"]["w"].array.tolist()
    (2, ('embed',), [0.0, 1.0, 2.0])

    The templates' leaves may be arrays, NamedArrays or ``jax.ShapeDtypeStruct`` values; only
    the prefixes named in ``templates`` are read (a full checkpoint loads as params only).
    ``templates`` may also be a function of the metadata (:func:`read_metadata`) returning
    them, for a model whose shape is recorded in ``extra``; it may raise
    :class:`CheckpointError` to refuse the file.
    Raises :class:`CheckpointError` naming the file and tensor for damage or a mismatch
    with the templates (see the module docstring), and :class:`ConfigMismatchError` if
    ``config`` is given and differs from the stored one outside ``allow_config_change``
    (compared before the tensors are read).
    """
    path = pathlib.Path(path)
    meta = read_metadata(path)
    _check_config(path, meta["config"], config, allow_config_change)
    if callable(templates):
        templates = templates(meta)
    trees = _read_trees(path, meta, templates, allow_nonfinite)
    return Loaded(meta["step"], trees, meta)


def restore(directory: str | os.PathLike, templates: Mapping[str, Any] | Callable[[dict], Mapping[str, Any]], *,
            config: Optional[Mapping[str, Any]] = None, allow_config_change: Iterable[str] = (),
            allow_nonfinite: bool = False) -> Optional[Loaded]:
    """The newest usable checkpoint in ``directory`` (as :func:`load`), or None if it holds none.

    >>> import tempfile, pathlib, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save(d, 1, {"x": np.ones(2)})
    ...     _ = pathlib.Path(d, "step_000002.safetensors").write_bytes(b"")  # a damaged newer file
    ...     step, trees, meta = restore(d, {"x": np.zeros(2)})  # logs: skipping .../step_000002.safetensors: empty file
    ...     print(restore(pathlib.Path(d) / "elsewhere", {"x": np.zeros(2)}))
    None
    >>> step, trees["x"].tolist(), list(meta["skipped"].values())
    (1, [1.0, 1.0], ['empty file'])

    Checkpoints are tried newest first. One that is damaged or does not fit ``templates``
    is reported as one warning line (``skipping <path>: <reason>``, logger
    ``namax.checkpoint``) and the next older one is tried; ``metadata["skipped"]`` maps the
    skipped paths to their reasons. If files exist but none is usable, raises
    :class:`CheckpointError` listing each with its reason. A configuration mismatch raises
    :class:`ConfigMismatchError` at once (no fallback past it).
    """
    found = list_checkpoints(directory)
    if not found:
        return None
    skipped: dict[str, str] = {}
    for _, path in reversed(found):
        try:
            step, trees, meta = load(path, templates, config=config, allow_config_change=allow_config_change,
                                     allow_nonfinite=allow_nonfinite)
        except ConfigMismatchError:
            raise
        except CheckpointError as e:
            logger.warning("skipping %s: %s", path, e.reason)
            skipped[str(path)] = e.reason
            continue
        meta["skipped"] = skipped
        return Loaded(step, trees, meta)
    listing = "".join(f"\n  {p}: {r}" for p, r in skipped.items())
    error = CheckpointError(directory, f"no usable checkpoint among {len(skipped)} file(s):{listing}")
    error.problems = skipped
    raise error


__all__ = ["FORMAT", "MISSING", "CheckpointError", "ConfigMismatchError", "Loaded", "save", "load", "restore", "latest",
           "list_checkpoints", "read_metadata"]
