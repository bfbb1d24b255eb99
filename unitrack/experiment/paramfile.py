"""Read and write ``params.yml`` / ``defaults.yml`` and YAML strings given by users.

Two loaders, chosen by who wrote the text:

- text from users (``--update "{lr: 0.1}"``, files passed to ``--update``) is read with ruamel.yaml's **safe**
  loader only, so ``!!python/object/apply:os.system [...]`` is refused (:class:`~unitrack.errors.UnsafeYAMLError`)
  and nothing in it runs (xmen used the full loader, SEED_NOTES S4);
- our own ``params.yml``/``defaults.yml`` are read and written with the **round-trip** loader, which keeps
  comments and key order and constructs only plain data.

Every loader bounds what aliases can do (#12 item 11): ``*name`` refers to an anchored node without copying it, so
a few hundred characters can describe billions of nodes (an "alias bomb") that exhaust memory as soon as anything
walks the data. A document whose aliases would add more than :data:`MAX_ALIAS_NODES` nodes (or
:data:`MAX_ALIAS_CHARS` characters of text), refers to itself, or nests deeper than :data:`MAX_DEPTH` is refused
with a :class:`~unitrack.errors.ConfigError` naming the file or argument; ordinary anchors (``<<: *defaults``) work.

Every write is atomic: a temporary file in the same folder, fsync, ``os.replace``. A reader (or a process killed
mid-write) therefore sees either the old file or the new one, never a torn one.

Dates are written in ISO-8601; xmen's ``%y-%m-%d-%H-%M-%S-%f`` is still read (:func:`to_iso`).

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> save_param({"a": 1, "b": [1, 2]}, folder)
    >>> dict(load_param(folder))["a"]
    1
    >>> dic_from_yml(string="{lr: 0.1, name: x}")
    {'lr': 0.1, 'name': 'x'}
"""

from __future__ import annotations

import io
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError
from ruamel.yaml.error import YAMLError

from unitrack.errors import IncompatibleYmlException, StorageError, UnsafeYAMLError
from unitrack.persistence.yamlsafe import (
    MAX_ALIAS_CHARS,
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    bounded,
    safe_yaml,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATE_FORMAT",
    "MAX_ALIAS_CHARS",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "IncompatibleYmlException",
    "atomic_write_text",
    "commented_to_py",
    "dic_from_yml",
    "dic_to_yaml",
    "dics_to_pandas",
    "flatten",
    "load_param",
    "load_params",
    "now_iso",
    "parse_user_yaml",
    "safe_yaml",
    "save_param",
    "set_keys",
    "to_iso",
    "to_yaml_value",
]

logger = logging.getLogger(__name__)

#: xmen's date format in params.yml (read only; unitrack writes ISO-8601).
DATE_FORMAT = "%y-%m-%d-%H-%M-%S-%f"
_OLD_FORMATS = (DATE_FORMAT, "%I:%M%p %B %d, %Y", "%I:%M%p %d/%m/%y")


def now_iso() -> str:
    """The current local time in ISO-8601 with microseconds."""
    return datetime.now().isoformat(timespec="microseconds")


def to_iso(value: Any) -> Any:
    """Return an xmen date (``%y-%m-%d-%H-%M-%S-%f`` and the docs' formats) as ISO-8601; others unchanged.

    Example:
        >>> to_iso("20-11-18-13-17-05-123456")
        '2020-11-18T13:17:05.123456'
    """
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if not isinstance(value, str):
        return value
    for fmt in _OLD_FORMATS:
        try:
            return datetime.strptime(value, fmt).isoformat(timespec="microseconds")
        except ValueError:
            continue
    return value


# -------------------------------------------------------------------------------------------- plain data
def commented_to_py(value: Any) -> Any:
    """Turn ruamel's CommentedMap/CommentedSeq (recursively) into dicts and lists."""
    if isinstance(value, Mapping):
        return {k: commented_to_py(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [commented_to_py(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


def flatten(d: Mapping[str, Any], parent_key: str = "", sep: str = "_") -> dict[str, Any]:
    """Flatten nested mappings, joining keys with ``sep``.

    Example:
        >>> flatten({"a": {"b": 1}, "c": 2})
        {'a_b': 1, 'c': 2}
    """
    items: dict[str, Any] = {}
    for key, value in d.items():
        new_key = f"{parent_key}{sep}{key}" if parent_key else str(key)
        if isinstance(value, Mapping):
            items.update(flatten(value, new_key, sep=sep))
        else:
            items[new_key] = value
    return items


def dics_to_pandas(dics: Iterable[Mapping[str, Any]], reg: str) -> pd.DataFrame:
    """Flatten each dict, keep the keys matching ``reg`` (``re.match``) and return one row per dict."""
    import pandas as pd  # heavy: only when a frame is asked for

    pattern = re.compile(reg)
    rows = [{k: v for k, v in flatten(dict(d)).items() if pattern.match(k)} for d in dics]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- yaml
_bounded = bounded
_safe_yaml = safe_yaml


def _rt_yaml() -> YAML:
    yaml = _bounded(YAML(typ="rt"))
    yaml.default_flow_style = False
    yaml.width = 4096
    return yaml


def parse_user_yaml(text: str, *, what: str = "YAML string") -> Any:
    """Parse YAML ``text`` written by a user with the safe loader (plain data only).

    Raises:
        UnsafeYAMLError: for tags that would construct Python objects (nothing is run).
        IncompatibleYmlException: for text that is not valid YAML.
    """
    try:
        return _safe_yaml().load(text)
    except ConstructorError as exc:
        raise UnsafeYAMLError(text, f"{what} uses a tag the safe loader refuses ({exc.problem})") from exc
    except YAMLError as exc:
        raise IncompatibleYmlException(f"{what} {_excerpt(text)} is not valid YAML: {exc}") from exc
    except RecursionError as exc:  # pragma: no cover - nesting is bounded by MAX_DEPTH first
        raise IncompatibleYmlException(f"{what} {_excerpt(text)} nests too deeply") from exc


def _excerpt(text: str, limit: int = 200) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f" (... {len(text):,} characters)"


def dic_from_yml(*, string: str | None = None, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load a mapping from a YAML string or a YAML file (exactly one), with the safe loader.

    Raises:
        IncompatibleYmlException: when both or neither are given, the file cannot be read, or the YAML is not a
            mapping (:class:`~unitrack.errors.UnsafeYAMLError` for python tags).
    """
    if (string is None) == (path is None):
        raise IncompatibleYmlException("dic_from_yml takes exactly one of string= or path=.")
    if path is not None:
        try:
            string = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IncompatibleYmlException(f"Cannot read YAML file {os.fspath(path)!r}: {exc}") from exc
        what = f"file {os.fspath(path)!r}"
    else:
        what = "YAML string"
    assert string is not None  # one of the two was given (checked above)
    data = parse_user_yaml(string, what=what)
    if not isinstance(data, dict):
        raise IncompatibleYmlException(f"{what} does not hold a mapping (got {type(data).__name__}).")
    return data


def dic_to_yaml(dic: Mapping[str, Any], typ: str = "rt", default_flow_style: bool | None = False) -> str:
    """Return ``dic`` (a dict or a CommentedMap, comments kept) as YAML text."""
    if typ not in ("rt", "safe"):
        raise IncompatibleYmlException(f"dic_to_yaml writes with typ='rt' or 'safe', not {typ!r}.")
    yaml = _rt_yaml() if typ == "rt" else YAML(typ="safe", pure=True)
    yaml.default_flow_style = default_flow_style
    stream = io.StringIO()
    yaml.dump(dic if typ == "rt" else commented_to_py(dic), stream)
    return stream.getvalue()


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``text``: temporary file beside it, fsync, ``os.replace``.

    Raises:
        StorageError: when the folder is not writable or the disk is full (the old file is left intact).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"Cannot write {target}: {exc}. Check the folder exists and is writable.") from exc


def load_param(root: str | os.PathLike[str], file: str = "params.yml") -> CommentedMap:
    """Load ``{root}/{file}`` with the round-trip loader (comments kept).

    Raises:
        IncompatibleYmlException: when the file is missing, unreadable or not a mapping.
    """
    path = Path(root) / file
    try:
        data = _rt_yaml().load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise IncompatibleYmlException(f"Cannot read {path}: {exc}") from exc
    except ConstructorError as exc:
        raise UnsafeYAMLError(str(path), f"it uses a tag unitrack does not read ({exc.problem})") from exc
    except YAMLError as exc:
        raise IncompatibleYmlException(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, CommentedMap):
        raise IncompatibleYmlException(f"{path} does not hold a mapping.")
    return data


def save_param(params: Mapping[str, Any], root: str | os.PathLike[str], file: str = "params.yml") -> None:
    """Write ``params`` (a dict or a CommentedMap, comments kept) to ``{root}/{file}`` atomically."""
    atomic_write_text(Path(root) / file, dic_to_yaml(params))


def load_params(roots: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Load the ``params.yml`` of each root into plain dicts (sequences become tuples, as in xmen)."""

    def tuples(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        return value

    return [tuples(commented_to_py(load_param(root))) for root in roots]


def to_yaml_value(value: Any) -> Any:
    """Return ``value`` as data the YAML dumper and every backend accept (tuples → lists, 0-d arrays → scalars)."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        value = item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (CommentedMap, CommentedSeq)):
        return commented_to_py(value)
    if isinstance(value, Mapping):
        return {str(k): to_yaml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_yaml_value(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def set_keys(doc: MutableMapping[str, Any], values: Mapping[str, Any]) -> None:
    """Assign ``values`` into ``doc`` in place, recursing into mappings, so a CommentedMap keeps its comments.

    (ruamel attaches a comment line to the last item before it, often inside a nested mapping: replacing the
    nested mapping wholesale would drop it.)
    """
    for key, value in values.items():
        current = doc.get(key)
        if isinstance(current, CommentedMap) and isinstance(value, Mapping):
            set_keys(current, value)
            for stale in [k for k in current if k not in value]:
                del current[stale]
        elif current != value or key not in doc:
            doc[key] = value
