"""cox's ``Parameters`` (a case-insensitive attribute view of a dict) and the helpers that build one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from unitrack.errors import ConfigError

__all__ = ["Parameters", "consistent", "override_json"]


class Parameters:
    """Access a dict's values as attributes, ignoring case.

    A missing key reads as ``None`` (as in cox). Setting an attribute sets the key in lower case.

    Args:
        params: The dict; it is used, not copied.

    Raises:
        ConfigError: Two keys differ only in case.

    Example:
        >>> ps = Parameters({"a": 1, "b": 3})
        >>> ps.A, ps.b, ps.missing
        (1, 3, None)
    """

    def __init__(self, params: dict[str, Any]) -> None:
        lowered: dict[str, str] = {}
        for key in params:
            low = str(key).lower()
            if low in lowered:
                raise ConfigError(
                    f"Parameters keys {lowered[low]!r} and {key!r} differ only in case.", key=key
                )
            lowered[low] = key
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "_lowered", lowered)

    def as_dict(self) -> dict[str, Any]:
        """Return the underlying dict."""
        params: dict[str, Any] = self.__dict__["params"]
        return params

    def _key(self, name: str) -> str | None:
        lowered: dict[str, str] = self.__dict__["_lowered"]
        return lowered.get(name.lower())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        key = self._key(name)
        return None if key is None else self.as_dict()[key]

    def __setattr__(self, name: str, value: Any) -> None:
        key = self._key(name)
        if key is None:
            key = name.lower()
            self.__dict__["_lowered"][key] = key
        self.as_dict()[key] = value

    def __delattr__(self, name: str) -> None:
        key = self._key(name)
        if key is None:
            raise AttributeError(name)
        del self.as_dict()[key]
        del self.__dict__["_lowered"][name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def __getstate__(self) -> dict[str, Any]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        Parameters.__init__(self, state)

    def __str__(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str)

    def __repr__(self) -> str:
        return f"Parameters({self.as_dict()!r})"


def consistent(old: Any, new: Any) -> Any:
    """Return ``new`` when ``old`` is None, else check that both are equal and return ``old``.

    Raises:
        ConfigError: Both are set and differ.

    Example:
        >>> consistent(None, 3), consistent(3, 3)
        (3, 3)
    """
    if old is None:
        return new
    if old != new:
        raise ConfigError(
            f"Inconsistent values: {old!r} was set, then {new!r}.", old=repr(old), new=repr(new)
        )
    return old


def override_json(
    args: Any, json_path: str | os.PathLike[str], check_consistency: bool = False
) -> Parameters:
    """Fill the ``None`` values of ``args`` with the values of a JSON file; values already set win.

    Args:
        args: A :class:`Parameters`, a mapping, or an object whose attributes are the arguments (argparse).
        json_path: The JSON file (an object at top level).
        check_consistency: Require the file and ``args`` to have the same keys (``config_path`` aside).

    Returns:
        A new :class:`Parameters`; ``args`` is not changed.

    Raises:
        ConfigError: The file is not a JSON object, or the keys differ when ``check_consistency`` is set.
    """
    try:
        with open(json_path, encoding="utf-8") as fh:
            loaded = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read JSON parameters from {json_path}: {exc}", path=str(json_path)
        ) from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{json_path} must hold a JSON object of parameters.", path=str(json_path))
    if isinstance(args, Parameters):
        params = dict(args.as_dict())
    elif isinstance(args, Mapping):
        params = dict(args)
    else:
        params = dict(vars(args))
    if check_consistency:
        ours = set(params) - {"config_path"}
        theirs = set(loaded) - {"config_path"}
        if ours != theirs:
            raise ConfigError(
                f"Keys of {json_path} and the arguments differ: only in the file: {sorted(theirs - ours)}; "
                f"only in the arguments: {sorted(ours - theirs)}.",
                path=str(json_path),
            )
    for key, value in loaded.items():
        if params.get(key) is None:
            params[key] = value
    return Parameters(params)
