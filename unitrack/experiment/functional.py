"""The functional API: a function whose first argument is a ``Root`` becomes an experiment.

::

    def hello(root: Root,   # the first argument is always the experiment
              a: str = 'Hello',  # @p the first
                                 # argument
              b: int = 3):       # @p the second argument
        with open(os.path.join(root.directory, 'out.txt'), 'w') as f:
            f.write(a * b)
        root.message({'length': len(a) * b})

    Hello = functional_experiment(hello)   # the same command line as any Experiment
    Hello().main()

The comment after each argument is its help (the ``@p`` is optional here); comment-only lines that follow
continue it. A comment belongs to the last argument starting on its line: the ones before it on that line get
no help. :func:`autodoc` adds the ``Parameters:`` lines to the function's own docstring.

Example:
    >>> def fn(root: Root, a: int = 3):  # @p a number
    ...     root.message({'a': a})
    >>> Fn = functional_experiment(fn)
    >>> Fn().a, Fn.__name__
    (3, 'fn')
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import textwrap
import tokenize
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from unitrack.experiment.experiment import Experiment, ExperimentMeta
from unitrack.experiment.params import Param

__all__ = ["Root", "autodoc", "functional_experiment", "read_comments", "read_params"]

logger = logging.getLogger(__name__)


class Root(Experiment):
    """The first argument of a functional experiment: an Experiment under another name.

    It gives the function the experiment's ``directory``, ``message`` and every other Experiment feature.
    """

    __unitrack_params__: ClassVar[list[Param]] = []  # no parameters of its own: no source to read


def _arg_comments(fn: Callable[..., Any]) -> dict[str, str]:
    """Return the comment text following each argument of ``fn`` (continuation lines joined)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    func = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if func is None:
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        return {}
    args = [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]
    body_start = func.body[0].lineno if func.body else func.end_lineno or func.lineno
    helps: dict[str, str] = {}
    for i, arg in enumerate(args):
        line = max(arg.end_lineno or arg.lineno, _default_end(func, arg))
        next_line = args[i + 1].lineno if i + 1 < len(args) else body_start
        parts = []
        # One argument per line (xmen's convention): a comment belongs to the last argument starting on its
        # line, so in ``x=3, y=[1, 2]):  # @p y's help`` x has no help.
        shares_line = i + 1 < len(args) and next_line <= line
        if line in comments and not shares_line:
            parts.append(comments[line])
            follow = line + 1
            while follow < next_line and follow in comments and follow not in code_lines:
                parts.append(comments[follow])
                follow += 1
        text = " ".join(p for p in parts if p)
        if text.startswith("@p"):
            text = text[2:].strip()
        helps[arg.arg] = text
    return helps


def _default_end(func: ast.FunctionDef | ast.AsyncFunctionDef, arg: ast.arg) -> int:
    positional = [*func.args.posonlyargs, *func.args.args]
    if arg in positional:
        offset = len(positional) - len(func.args.defaults)
        index = positional.index(arg) - offset
        if index >= 0:
            node = func.args.defaults[index]
            return node.end_lineno or node.lineno
    elif arg in func.args.kwonlyargs:
        node_or_none = func.args.kw_defaults[func.args.kwonlyargs.index(arg)]
        if node_or_none is not None:
            return node_or_none.end_lineno or node_or_none.lineno
    return arg.end_lineno or arg.lineno


def read_params(fn: Callable[..., Any]) -> list[Param]:
    """The parameters of a functional experiment: every argument after the first, with type, default, help."""
    helps = _arg_comments(fn)
    signature = inspect.signature(fn)
    params = []
    for i, (name, parameter) in enumerate(signature.parameters.items()):
        if i == 0 or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty:
            type_text = None
        elif isinstance(annotation, str):
            type_text = annotation
        else:
            type_text = getattr(annotation, "__name__", None) or str(annotation)
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        params.append(Param(name, type_text, default, helps.get(name, ""), fn.__name__))
    return params


def read_comments(fn: Callable[..., Any]) -> str:
    """Return the help lines of ``fn``'s arguments, one ``    name: type=default ~ help`` line each.

    (xmen's source returned a ``(docs, params)`` tuple; the documented return, a string, is kept here and
    :func:`read_params` gives the parameters.)
    """
    return "\n".join("    " + p.line() for p in read_params(fn))


def autodoc(func: Callable[..., Any]) -> Callable[..., Any]:
    """Append ``Parameters:`` and the argument help lines to ``func.__doc__`` (marks ``func.autodocs``)."""
    doc = inspect.cleandoc(func.__doc__) if func.__doc__ else ""
    func.__doc__ = (
        f"{doc}\n\nParameters:\n{read_comments(func)}" if doc else f"Parameters:\n{read_comments(func)}"
    )
    func.autodocs = True  # type: ignore[attr-defined]  # xmen's marker, read by functional_experiment
    return func


class _FunctionalMeta(ExperimentMeta):
    """Metaclass of functional experiments: iterating the class yields ``(cls, None)`` (xmen's legacy form)."""

    def __iter__(cls) -> Iterator[Any]:
        return iter((cls, None))


def functional_experiment(fn: Callable[..., Any]) -> type[Experiment]:
    """Return an Experiment class equivalent to ``fn``: its arguments after the first become parameters.

    ``run(self)`` calls ``fn(self, **parameters)``; the class keeps ``fn``'s name, module and docstring (with the
    ``Parameters:`` section added unless :func:`autodoc` did) and ``cls.fn = (module, name)``.
    """
    params = read_params(fn)

    def run(self: Experiment) -> Any:
        return fn(self, **{p.name: getattr(self, p.name) for p in params})

    attrs: dict[str, Any] = {
        "__unitrack_params__": params,
        "__module__": fn.__module__,
        "__qualname__": fn.__qualname__,
        "__doc__": fn.__doc__,
        "fn": (fn.__module__, fn.__name__),
        "__unitrack_function__": fn,  # read by meta.get_version: the version names the function
        "run": run,
    }
    for param in params:
        attrs[param.name] = param.default
    cls: type[Experiment] = _FunctionalMeta(fn.__name__, (Root,), attrs)  # type: ignore[assignment]  # a metaclass call builds a Root subclass
    return cls
