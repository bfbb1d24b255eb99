"""Experiment parameters declared by ``# @p`` comments, read from the class source with ``ast`` and ``tokenize``.

A parameter is a class attribute (or a ``self.x = ...`` line in ``__init__``) whose line ends with a comment
starting ``@p``::

    class AnExperiment(Experiment):
        '''Fit a line.'''
        lr: float = 0.1       # @p the learning rate
        layers: list = [8, 8] # @p hidden sizes

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seed: int = 0  # @p random seed

The annotation gives the type (checked and cast by :func:`coerce`), the text after ``@p`` the help. Parameters
are inherited along the MRO; a subclass that assigns an inherited parameter (with or without ``@p``) changes
its default and keeps its help; a property or method of the same name removes it. Private (``_x``) names are
never parameters.

:class:`TypedMeta` appends a generated section to the class docstring, one group per defining class, one line
per parameter in the format ``name: type=default ~ help`` (SEED_NOTES C16)::

    Parameters:
      AnExperiment
      ------------
        lr: float=0.1 ~ the learning rate

Example:
    >>> p = Param("lr", "float", 0.1, "the learning rate", "Exp")
    >>> p.line()
    'lr: float=0.1 ~ the learning rate'
    >>> coerce(p, 1)
    1.0
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import re
import textwrap
import tokenize
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from unitrack.errors import InvalidParameterError

__all__ = [
    "Param",
    "TypedMeta",
    "coerce",
    "get_attribute_helps",
    "get_docs",
    "parameters_section",
    "read_source_params",
]

logger = logging.getLogger(__name__)

_PARAM_COMMENT = re.compile(r"#\s*@p\b[ \t]*(?P<help>.*)$")
#: Unicode categories escaped in a rendered parameter line: controls and line/paragraph separators, every
#: character ``str.splitlines`` breaks at.
_ESCAPED_CATEGORIES = frozenset(("Cc", "Zl", "Zp"))
_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    """One declared parameter: its name, annotation text, default value, help and defining class."""

    name: str
    type: str | None
    default: Any
    help: str
    owner: str
    in_init: bool = False
    #: Found without ``@p``: only a new type/default for a parameter a base declares, else ignored.
    redeclares: bool = False

    def line(self) -> str:
        """The docstring/``--help`` line: ``name: type=default ~ help`` (parts left out when missing).

        The line is always one line: control characters and line separators (in a default such as
        ``'a\\nb'``) are escaped as ``repr`` escapes them (``a\\nb``); other text is shown as ``str`` shows it.
        """
        text = f"{self.name}: {self.type}" if self.type else self.name
        text += f"={self.default!s}"
        if self.help:
            text += f" ~ {self.help}"
        return _one_line(text)


def _one_line(text: str) -> str:
    """Escape the characters of ``text`` that would break its line, as ``repr`` does (``\\n``, ``\\x85``)."""
    if text.isprintable():
        return text
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch for ch in text)


# ------------------------------------------------------------------------------------------ source parsing
def _comments(source: str) -> dict[int, str]:
    """Map line number → ``@p`` help text for every ``# @p`` comment in ``source``."""
    found: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                match = _PARAM_COMMENT.match(tok.string)
                if match:
                    found[tok.start[0]] = match.group("help").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        logger.debug("could not tokenize a class body; no @p parameters read from it")
    return found


def _help_for(node: ast.stmt, comments: Mapping[int, str]) -> str | None:
    end = getattr(node, "end_lineno", None) or node.lineno
    for line in (end, *range(node.lineno, end)):
        if line in comments:
            return comments[line]
    return None


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return ast.unparse(node)


def _is_literal(node: ast.expr | None) -> bool:
    if node is None:
        return False
    try:
        ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _class_node(cls: type) -> tuple[ast.ClassDef, str] | None:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node, source
    return None


def read_source_params(cls: type) -> list[Param]:
    """Return the ``# @p`` parameters declared in ``cls``'s own body and ``__init__`` (not inherited ones).

    A class whose source cannot be read (defined in a REPL or with ``type()``) declares none.
    """
    found = _class_node(cls)
    if found is None:
        return []
    node, source = found
    comments = _comments(source)
    params: list[Param] = []
    for stmt in node.body:
        name: str | None = None
        annotation: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name, annotation, value = stmt.target.id, stmt.annotation, stmt.value
        elif (
            isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        ):
            name, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":
            params.extend(_init_params(stmt, comments, cls.__name__))
            continue
        if name is None or name.startswith("_"):
            continue
        help_text = _help_for(stmt, comments)
        default = cls.__dict__.get(name, _literal(value))
        type_text = ast.unparse(annotation) if annotation is not None else None
        if help_text is None:
            # Not a declaration, but a re-declaration of an inherited parameter (new type and/or default) when a
            # base has one of that name: collect_params keeps it only then (redeclares=True).
            params.append(Param(name, type_text, default, "", cls.__name__, redeclares=True))
            continue
        params.append(Param(name, type_text, default, help_text, cls.__name__))
    return params


def _init_params(func: ast.FunctionDef, comments: Mapping[int, str], owner: str) -> list[Param]:
    params = []
    for stmt in ast.walk(func):
        target: ast.expr | None = None
        annotation: ast.expr | None = None
        if isinstance(stmt, ast.AnnAssign):
            target, annotation = stmt.target, stmt.annotation
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
        if not (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
            and not target.attr.startswith("_")
        ):
            continue
        assert isinstance(stmt, (ast.AnnAssign, ast.Assign))  # narrowed above
        help_text = _help_for(stmt, comments)
        if help_text is None and not _is_literal(stmt.value):
            continue  # self.lr = lr: not a default that can be shown
        type_text = ast.unparse(annotation) if annotation is not None else None
        params.append(
            Param(
                target.attr,
                type_text,
                _literal(stmt.value),
                help_text or "",
                owner,
                in_init=True,
                redeclares=help_text is None,
            )
        )
    return params


# --------------------------------------------------------------------------------------------- collection
def collect_params(cls: type, own: list[Param]) -> dict[str, Param]:
    """Merge the parameters of ``cls``'s bases (MRO order) with its own declarations.

    The value in force decides, as attribute lookup does: for each inherited parameter the first class along
    ``cls.__mro__`` that defines the name wins. When that definition is a property, method or descriptor, the
    name is not a parameter any more (also when the property sits in another base under multiple
    inheritance); when it is a plain value, that value is the default shown. A class that re-annotates a
    parameter (``a: float = 0.5`` over ``a: str``), with or without ``@p``, changes its type, and an
    ``__init__`` that assigns ``self.b = 32`` changes the default shown, keeping the help.
    """
    merged: dict[str, Param] = {}
    for base in reversed(cls.__mro__[1:]):
        for name, param in getattr(base, "_params", {}).items():
            merged[name] = param
    for name in list(merged):
        for klass in cls.__mro__:
            if name not in klass.__dict__:
                continue
            value = klass.__dict__[name]
            declared = getattr(klass, "_params", {}).get(name) if klass is not cls else None
            if _is_behaviour(value):
                del merged[name]  # a property or method along the MRO replaces the parameter
            elif declared is not None and klass is not cls:
                merged[name] = replace(merged[name], default=declared.default, type=declared.type)
            else:
                merged[name] = replace(merged[name], default=value)
            break
    for param in own:
        previous = merged.get(param.name)
        if param.redeclares:
            if previous is None:
                continue  # a plain attribute, not a parameter
            merged[param.name] = replace(previous, type=param.type or previous.type, default=param.default)
            continue
        if previous is not None:
            # Re-declared: new default and type, and the new help when given (else the old one).
            param = replace(param, help=param.help or previous.help, type=param.type or previous.type)
        merged[param.name] = param
    return merged


def _is_behaviour(value: Any) -> bool:
    """Whether a class attribute is code (property, method, descriptor) rather than a parameter's value."""
    return (
        isinstance(value, (property, staticmethod, classmethod))
        or inspect.isfunction(value)
        or (
            hasattr(value, "__get__")
            and not isinstance(value, (int, float, str, bool, list, dict, tuple, set))
        )
    )


def parameters_section(params: Mapping[str, Param], mro: tuple[type, ...]) -> str:
    """The generated ``Parameters:`` docstring section, grouped by defining class in MRO order (bases first)."""
    if not params:
        return ""
    lines = ["Parameters:"]
    for klass in reversed(mro):
        group = [p for p in params.values() if p.owner == klass.__name__]
        if not group:
            continue
        lines += ["  " + klass.__name__, "  " + "-" * len(klass.__name__)]
        lines += ["    " + p.line() for p in group]
    return "\n".join(lines)


class TypedMeta(type):
    """Metaclass reading ``# @p`` parameters into ``cls._params`` and documenting them in ``cls.__doc__``.

    A class may instead declare its parameters explicitly in ``__unitrack_params__`` (a list of
    :class:`Param`), as the functional API does for functions.
    """

    _params: dict[str, Param]
    _raw_doc: str | None

    def __init__(cls, name: str, bases: tuple[type, ...], attr_dict: dict[str, Any]) -> None:
        super().__init__(name, bases, attr_dict)
        own = attr_dict.get("__unitrack_params__")
        if own is None:
            own = read_source_params(cls)
        cls._params = collect_params(cls, list(own))
        cls._raw_doc = attr_dict.get("__doc__")
        section = parameters_section(cls._params, cls.__mro__)
        doc = textwrap.dedent(cls._raw_doc).strip() if cls._raw_doc else ""
        if section and "\nParameters:\n" not in f"\n{doc}\n":
            doc = f"{doc}\n\n{section}" if doc else section
        cls.__doc__ = doc or None


def get_attribute_helps(cls: type) -> dict[str, str]:
    """Return ``{name: help}`` for every ``@p`` parameter of ``cls`` and its bases."""
    params: Mapping[str, Param] = getattr(cls, "_params", {})
    return {name: p.help for name, p in params.items()}


def get_docs(cl: type) -> list[str]:
    """Return the docstrings of ``cl`` and every base class (MRO order, empty ones skipped)."""
    docs = []
    for klass in cl.__mro__:
        doc = getattr(klass, "_raw_doc", None) if "_raw_doc" in vars(klass) else klass.__doc__
        if doc and klass is not object:
            docs.append(inspect.cleandoc(doc))
    return docs


# ------------------------------------------------------------------------------------------------ types
_SIMPLE: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
}


def _split_union(text: str) -> list[str]:
    depth, parts, current = 0, [], ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _base_types(type_text: str) -> list[type | None] | None:
    """Return the accepted runtime types for an annotation (None in the list = ``None`` allowed); None = any."""
    text = type_text.strip().replace("typing.", "").replace("t.", "")
    text = text.strip("'\"")
    match = re.fullmatch(r"Optional\[(.*)\]", text)
    if match:
        inner = _base_types(match.group(1))
        return None if inner is None else [*inner, None]
    match = re.fullmatch(r"Union\[(.*)\]", text)
    parts = [p.strip() for p in match.group(1).split(",")] if match else _split_union(text)
    accepted: list[type | None] = []
    for part in parts:
        if part in ("None", "NoneType"):
            accepted.append(None)
            continue
        head = part.split("[", 1)[0].strip()
        head = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Set": "set"}.get(head, head)
        if head not in _SIMPLE:
            return None  # a type we cannot check (Any, a user class): accept anything
        accepted.append(_SIMPLE[head])
    return accepted


def coerce(param: Param, value: Any) -> Any:
    """Return ``value`` as the parameter's annotated type, or raise naming the parameter and the type.

    ints widen to float, lists become tuples for ``tuple`` parameters and vice versa; ``None`` passes when the
    annotation allows it or the default is None. Unannotated parameters, and types other than the builtins
    (``int float str bool list dict tuple set``, their ``typing`` spellings, ``Optional``/``|``), are not checked.

    Raises:
        InvalidParameterError: for a value of another type (e.g. ``'abc'`` for a float).
    """
    accepted = _base_types(param.type) if param.type else None
    if accepted is None:
        return value
    if value is None and (None in accepted or param.default is None):
        return None
    for kind in accepted:
        if kind is None:
            continue
        if kind is bool:
            if isinstance(value, bool):
                return value
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind in (list, tuple, set) and isinstance(value, (list, tuple, set)):
            return kind(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    expected = param.type or " or ".join(t.__name__ for t in accepted if t is not None)
    raise InvalidParameterError(
        param.name,
        f"expects {expected}, got {value!r} ({type(value).__name__}).",
        expected=expected,
        value=value,
    )
