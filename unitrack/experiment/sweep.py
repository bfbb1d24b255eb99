r"""The register grammar: turn ``"{lr: 0.1 | 0.01, depth: 2 | 3}"`` into one override dict per experiment.

The text is a YAML flow mapping read with ruamel's **safe** loader only (SEED_NOTES S4, A11, C10):

- a string value containing ``|`` is a list of alternatives, each part read again as YAML (``1`` → int,
  ``null`` or nothing → None); every combination of the alternatives is an experiment, in key order
  (``zip=True`` pairs the i-th alternatives instead);
- ``\|`` is a literal ``|`` and ``\\`` a literal backslash in a value holding a ``|`` (quoted or not: YAML
  quotes do not change the split); a part holding an escape is text, not read again as YAML (a collection part
  excepted). ``{s: 'a \| b'}`` is one experiment with ``s = "a | b"``; in double quotes YAML needs ``\\|``.
  A value without ``|`` is taken as written, backslashes included;
- collections are alternatives only when the whole value is quoted: ``{a: "[1, 2] | {k: 1}"}``;
- ``~loguniform(a, b)``, ``~uniform(a, b)``, ``~randint(a, b)`` and ``~choice(x, y, ...)`` are drawn
  ``samples`` times with ``random.Random(seed)`` (each draw is combined with every grid point);
- each value is cast to the type of its default (ints to floats, whole floats to ints, scalars to str; a default
  of None is never cast), a partial dict is merged into the default dict, a list must keep its length, and an
  unknown key is an error naming the known ones.

Any text gives experiments or a :class:`~unitrack.errors.RegisterSyntaxError` (a ConfigError with a position).

Example:
    >>> [o for o in expand("{a: 1 | 2, b: x}", {"a": 0.0, "b": "y"})]
    [{'a': 1.0, 'b': 'x'}, {'a': 2.0, 'b': 'x'}]
    >>> expand("{a: 1 | 2, b: 3 | 4}", {"a": 0, "b": 0}, zip=True)
    [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
    >>> expand(r"{s: 'a \| b | c'}", {"s": ""})
    [{'s': 'a | b'}, {'s': 'c'}]
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.error import MarkedYAMLError, YAMLError

from unitrack.errors import RegisterSyntaxError
from unitrack.experiment.paramfile import safe_yaml

__all__ = ["Distribution", "escape_alternative", "expand", "parse_register_string"]

_DISTRIBUTION = re.compile(r"~\s*(?P<name>[A-Za-z_]\w*)\s*\((?P<args>[^()\"'\n]*)\)")
_UNQUOTED_DISTRIBUTION = re.compile(r"(?<=:)(?P<space>\s*)(?P<spec>" + _DISTRIBUTION.pattern + r")")
_KNOWN_DISTRIBUTIONS = ("choice", "loguniform", "randint", "uniform")


@dataclass(frozen=True)
class Distribution:
    """A random-search value: ``~name(args)``."""

    name: str
    args: tuple[Any, ...]

    def draw(self, rng: random.Random) -> Any:
        """Draw one value (floats rounded to 6 significant digits so names and values agree)."""
        if self.name == "choice":
            return rng.choice(self.args)
        low, high = self.args
        if self.name == "randint":
            return rng.randint(int(low), int(high))
        if self.name == "uniform":
            value = rng.uniform(low, high)
        else:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return float(f"{value:.6g}")


def _load(text: str, offset: int, source: str) -> Any:
    """Read ``text`` with the safe loader; errors become RegisterSyntaxError at ``offset`` + the YAML mark."""
    try:
        return safe_yaml().load(text)  # aliases and nesting bounded (#12 item 11)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = offset + (mark.index if mark is not None else 0)
        raise RegisterSyntaxError(source, min(position, len(source)), str(exc.problem or exc)) from exc
    except (YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RegisterSyntaxError(source, offset, f"not valid YAML ({type(exc).__name__}: {exc})") from exc


def _quote_distributions(text: str) -> str:
    """Quote unquoted ``~name(a, b)`` values, whose commas would otherwise end a YAML flow scalar."""
    return _UNQUOTED_DISTRIBUTION.sub(lambda m: m["space"] + '"' + m["spec"] + '"', text)


def _parse_distribution(spec: str, source: str, position: int) -> Distribution:
    match = _DISTRIBUTION.fullmatch(spec.strip())
    if match is None:
        raise RegisterSyntaxError(source, position, f"{spec!r} is not ~name(arguments)")
    name = match["name"]
    if name not in _KNOWN_DISTRIBUTIONS:
        raise RegisterSyntaxError(
            source, position, f"unknown distribution {name!r}; known: {', '.join(_KNOWN_DISTRIBUTIONS)}"
        )
    args = _load(f"[{match['args']}]", 0, f"[{match['args']}]")
    if not isinstance(args, list) or not args:
        raise RegisterSyntaxError(source, position, f"{spec!r} needs arguments")
    if name != "choice":
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise RegisterSyntaxError(source, position, f"~{name} takes two numbers (low, high)")
        low, high = float(args[0]), float(args[1])
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise RegisterSyntaxError(source, position, f"~{name} needs finite low <= high")
        if name == "loguniform" and low <= 0:
            raise RegisterSyntaxError(source, position, "~loguniform needs 0 < low <= high")
    return Distribution(name, tuple(args))


_ESCAPE = re.compile(r"\\([|\\])")


def escape_alternative(text: str) -> str:
    """Escape ``text`` so the register grammar reads it as one literal alternative (``|`` → ``\\|``).

    Example:
        >>> escape_alternative("a | b")
        'a \\\\| b'
        >>> escape_alternative("plain")
        'plain'
    """
    if "|" not in text:
        return text
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _split_alternatives(value: str) -> list[str]:
    """Split ``value`` at each ``|`` that is not escaped (``\\|``); the parts keep their escapes."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and value[i + 1 : i + 2] in ("|", "\\"):
            current.append(value[i : i + 2])
            i += 2
            continue
        if char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


def _alternative(part: str, position: int, source: str) -> Any:
    """One ``|`` alternative: YAML when it reads as YAML; else, unless it opens a collection, the text itself.

    A part holding an escape (``\\|``, ``\\\\``) is its unescaped text (a collection is still read as YAML).
    """
    stripped = part.strip()
    if not stripped:
        return None
    if _ESCAPE.search(stripped):
        text = _unescape(stripped)
        return _load(text, position, source) if text[0] in "[{" else text
    try:
        return _load(stripped, position, source)
    except RegisterSyntaxError:
        if stripped[0] in "[{'\"":
            raise
        return stripped  # e.g. `id` or @x: characters YAML reserves, meant as text


def parse_register_string(text: str) -> dict[str, list[Any] | Distribution]:
    """Parse register text into ``{key: [alternatives] | Distribution}`` (no defaults applied).

    Raises:
        RegisterSyntaxError: for text that is not a flow mapping of string keys, or a bad alternative.
    """
    if not isinstance(text, str):
        raise RegisterSyntaxError(repr(text), 0, "the register string must be text")
    if "\x00" in text:
        raise RegisterSyntaxError(text, text.index("\x00"), "NUL characters are not allowed")
    data = _load(_quote_distributions(text), 0, text)
    if not isinstance(data, dict):
        raise RegisterSyntaxError(text, 0, "expected a mapping such as {lr: 0.1 | 0.01}")
    parsed: dict[str, list[Any] | Distribution] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise RegisterSyntaxError(text, 0, f"keys must be parameter names, not {key!r}")
        position = max(text.find(key), 0)
        if isinstance(value, str) and value.lstrip().startswith("~") and "(" in value:
            parsed[key] = _parse_distribution(value, text, position)
        elif isinstance(value, str) and "|" in value:
            parts = _split_alternatives(value)
            if len(parts) == 1:  # only escaped bars: one value, taken as written (#12 item 14)
                parsed[key] = [_unescape(value)]
            else:
                parsed[key] = [_alternative(part, position, text) for part in parts]
        else:
            parsed[key] = [value]
    return parsed


def _type_name(value: Any) -> str:
    return type(value).__name__


def cast_to_default(key: str, value: Any, default: Any) -> Any:
    """Cast an override to its default's type (see the module docstring).

    Raises:
        ValueError: when the value cannot be the default's type (the caller adds the position).
    """
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} is a bool; got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{key} is an int; got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key} is a float; got {value!r}")
    if isinstance(default, str):
        if isinstance(value, (list, dict)):
            raise ValueError(f"{key} is a str; got a {_type_name(value)}")
        return value if isinstance(value, str) else str(value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise ValueError(f"{key} is a list of {len(default)}; got {value!r}")
        if len(value) != len(default):
            raise ValueError(f"{key} is a list of {len(default)} items; got {len(value)}")
        return [
            cast_to_default(f"{key}[{i}]", v, d) for i, (v, d) in enumerate(zip(value, default, strict=True))
        ]
    if isinstance(default, Mapping):
        if not isinstance(value, dict):
            raise ValueError(f"{key} is a mapping; got {value!r}")
        merged = dict(default)
        for sub, v in value.items():
            merged[sub] = cast_to_default(f"{key}.{sub}", v, default.get(sub))
        return merged
    return value


def expand(
    text: str,
    defaults: Mapping[str, Any],
    *,
    samples: int | None = None,
    seed: int | None = None,
    zip: bool = False,  # noqa: A002 - the CLI flag's name
) -> list[dict[str, Any]]:
    """Return one override dict (keys as written, values cast to the defaults' types) per experiment.

    Args:
        text: the register string.
        defaults: parameter defaults (keys starting with ``_`` are not parameters).
        samples: draws of the ``~distribution`` values (default 1 when there are any).
        seed: seed of the draws (None: a fresh one).
        zip: pair alternatives by position instead of taking every combination.

    Raises:
        RegisterSyntaxError: for bad text, unknown keys, values of the wrong type, or mismatched zip lengths.
    """
    parsed = parse_register_string(text)
    known = sorted(k for k in defaults if not str(k).startswith("_"))
    for key in parsed:
        if key not in known:
            raise RegisterSyntaxError(
                text, max(text.find(key), 0), f"unknown key {key!r}; known: {', '.join(known) or '(none)'}"
            )
    grid = {k: v for k, v in parsed.items() if isinstance(v, list)}
    randoms = {k: v for k, v in parsed.items() if isinstance(v, Distribution)}
    if samples is not None and samples < 1:
        raise RegisterSyntaxError(text, 0, f"samples must be at least 1, not {samples}")
    if samples is not None and samples > 1 and not randoms:
        raise RegisterSyntaxError(text, 0, "samples= needs at least one ~distribution value")
    if zip:
        lengths = {len(v) for v in grid.values() if len(v) > 1}
        if len(lengths) > 1:
            raise RegisterSyntaxError(
                text, 0, f"zip needs the same number of alternatives for every key; got {sorted(lengths)}"
            )
        n = lengths.pop() if lengths else 1
        rows = [tuple(v[i] if len(v) > 1 else v[0] for v in grid.values()) for i in range(n)]
    else:
        rows = list(itertools.product(*grid.values()))
    rng = random.Random(seed)  # noqa: S311 - a parameter search, not cryptography
    out: list[dict[str, Any]] = []
    for row in rows:
        for _ in range(samples or 1):
            values = dict(zip_(grid, row))
            values.update({k: d.draw(rng) for k, d in randoms.items()})
            ordered = {k: values[k] for k in parsed}
            try:
                out.append({k: cast_to_default(k, v, defaults[k]) for k, v in ordered.items()})
            except ValueError as exc:
                key = str(exc).split(" ", 1)[0].split(".")[0].split("[")[0]
                raise RegisterSyntaxError(text, max(text.find(key), 0), str(exc)) from exc
    return out


zip_ = zip
