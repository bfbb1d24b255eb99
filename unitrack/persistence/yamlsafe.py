"""YAML read with bounded aliases and nesting: the one loader for text unitrack did not write itself.

``*name`` refers to an anchored node without copying it, so a few hundred characters can describe billions of
nodes (an "alias bomb") that exhaust memory as soon as anything walks the data (#12 item 11). Every loader built
here checks each composed document before anything is constructed from it: a document whose aliases would add
more than :data:`MAX_ALIAS_NODES` nodes (or :data:`MAX_ALIAS_CHARS` characters of text), refers to itself, or
nests deeper than :data:`MAX_DEPTH` is refused with ruamel's ``ComposerError``, which callers turn into a
:class:`~unitrack.errors.ConfigError` naming the file or argument; ordinary anchors (``<<: *defaults``) work.

It lives in ``persistence`` because the run catalog reads ``params.yml`` and ``config.yml`` too; the experiment
layer's ``paramfile`` builds its loaders on it.

Example:
    >>> safe_yaml().load("{a: &x [1, 2], b: *x}")
    {'a': [1, 2], 'b': [1, 2]}
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_ALIAS_CHARS",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "bounded",
    "check_aliases",
    "describe",
    "safe_yaml",
]

#: Nodes that aliases may add to a document (each alias counts as a copy of what it refers to).
MAX_ALIAS_NODES = 100_000
#: Characters of text that aliases may add to a document.
MAX_ALIAS_CHARS = 10_000_000
#: Deepest nesting read (parameters nest a few levels; deeper input would only exhaust the stack).
MAX_DEPTH = 100


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _text_size(node: Node) -> int:
    return len(node.value) if isinstance(node, ScalarNode) and isinstance(node.value, str) else 0


def check_aliases(root: Node | None) -> None:
    """Refuse a composed document whose aliases refer to a node containing them, or add too much.

    Sizes are computed once per distinct node (linear in the text), counting each alias as a full copy.

    Raises:
        ComposerError: A recursive alias, or aliases adding more than :data:`MAX_ALIAS_NODES` nodes or
            :data:`MAX_ALIAS_CHARS` characters.
    """
    if root is None:
        return
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, characters) of its full expansion
    open_nodes: set[int] = set()  # nodes entered and not finished: the path from the root
    unique_nodes = unique_chars = 0
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            nodes, chars = 1, _text_size(node)
            for child in _children(node):
                child_nodes, child_chars = sizes[id(child)]
                nodes += child_nodes
                chars += child_chars
            sizes[key] = (nodes, chars)
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        unique_nodes += 1
        unique_chars += _text_size(node)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ComposerError(
                    None,
                    None,
                    "an alias refers to a node that contains it (a recursive alias)",
                    child.start_mark,
                )
            if id(child) not in sizes:
                stack.append((child, False))
    nodes, chars = sizes[id(root)]
    if nodes - unique_nodes > MAX_ALIAS_NODES or chars - unique_chars > MAX_ALIAS_CHARS:
        raise ComposerError(
            None,
            None,
            f"its aliases expand it by {nodes - unique_nodes:,} nodes and {chars - unique_chars:,} characters "
            f"(at most {MAX_ALIAS_NODES:,} and {MAX_ALIAS_CHARS:,}): an alias bomb, refused. Write the values "
            "out, or refer to fewer of them",
            root.start_mark,
        )


class _BoundedComposer(Composer):
    """ruamel's composer, checking each document's aliases before anything is built from it."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        check_aliases(node)
        return node


def bounded(yaml: YAML) -> YAML:
    """Make ``yaml`` check each document's aliases and bound its nesting; returns it."""
    yaml.Composer = _BoundedComposer
    yaml.max_depth = MAX_DEPTH
    return yaml


def safe_yaml() -> YAML:
    """ruamel's safe loader (plain data only), with alias expansion and nesting bounded."""
    return bounded(YAML(typ="safe", pure=True))


def describe(exc: BaseException) -> str:
    """One line saying what is wrong with a YAML document: the problem and where, not ruamel's caret drawing.

    Example:
        >>> from ruamel.yaml.error import YAMLError
        >>> try:
        ...     safe_yaml().load("a: [1, 2")
        ... except YAMLError as exc:
        ...     describe(exc)
        "while parsing a flow sequence: expected ',' or ']', but got '<stream end>' (line 1, column 9)"
    """
    problem = getattr(exc, "problem", None)
    if not problem:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return lines[-1] if lines else type(exc).__name__
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{context}: {problem}{where}" if context else f"{problem}{where}"
