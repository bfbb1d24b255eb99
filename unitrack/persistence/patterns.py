"""User regular expressions, compiled once and matched in linear time.

Every pattern a user (or a remote client) supplies goes through :func:`compile_pattern`: ``$regex`` in queries on
every backend and on the server, and ``view -f`` filters. Python's ``re`` backtracks: ``^([0-9a-f]+)+$`` against a
64-digit trial uid never finishes, and it holds the GIL while it runs, so one query would stop a whole server.
Patterns here run on RE2 (``google-re2``), whose matching time grows linearly with the text, whatever the pattern.

What that means for a pattern:

- The syntax is Python's for everything RE2 has: classes, ``\\d \\w \\s \\b``, ``(?i)`` and other inline flags,
  ``(?P<name>...)``, ``{m,n}``. RE2 has no look-around (``(?=``, ``(?!``, ``(?<=``, ``(?<!``) and no
  back-references (``\\1``): such patterns are refused with a message saying so. ``\\Z`` is spelled ``\\z``.
- A pattern is at most :data:`MAX_PATTERN_LENGTH` characters, and a repetition count at most
  :data:`MAX_REPEAT` (``a{99999999999}`` is refused, not read as text).
- Any problem is an :class:`~unitrack.errors.InvalidQueryError` naming the pattern and the fix; nothing else is
  ever raised.

Example:
    >>> uid = compile_pattern("^([0-9a-f]+)+$")
    >>> uid.search("ab" * 32), uid.search("ab" * 32 + "g")
    (True, False)
    >>> compile_pattern("(?i)^adam").match("Adam-W")
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

from unitrack.errors import InvalidQueryError

__all__ = ["MAX_PATTERN_LENGTH", "MAX_REPEAT", "UserPattern", "compile_pattern"]

#: Longest pattern accepted, in characters.
MAX_PATTERN_LENGTH = 1000
#: Largest repetition count (``x{n}``, ``x{m,n}``), RE2's own limit.
MAX_REPEAT = 1000
#: Memory RE2 may use for one compiled pattern (its default); larger programs are refused.
_MAX_MEM = 8 << 20

_UNSUPPORTED = {
    "invalid perl operator": "look-around ((?=, (?!, (?<=, (?<!) is not supported: patterns run on RE2, in "
    "time linear in the text; rewrite the pattern without it",
    "invalid escape sequence: \\Z": "write \\z for the end of the text",
}


@dataclass(frozen=True)
class UserPattern:
    """A compiled user pattern. :meth:`search` finds it anywhere in a text, :meth:`match` at its start,
    :meth:`fullmatch` the whole text."""

    pattern: str
    _regexp: Any

    def search(self, text: str) -> bool:
        """Whether the pattern occurs in ``text``."""
        return self._regexp.search(text) is not None

    def match(self, text: str) -> bool:
        """Whether ``text`` starts with a match of the pattern (``re.match``)."""
        return self._regexp.match(text) is not None

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the pattern (``re.fullmatch``)."""
        return self._regexp.fullmatch(text) is not None


def _show(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


def _check_repeats(pattern: str) -> None:
    """Refuse ``{m}``/``{m,n}`` counts above :data:`MAX_REPEAT` (RE2 would read ``a{99999999999}`` as text).

    One pass over the pattern: escapes and character classes are skipped, as RE2's parser does.
    """
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern.startswith("^", i + 1):
                i += 1
            if pattern.startswith("]", i + 1):  # a leading ] is a literal
                i += 1
        elif c == "{":
            j = i + 1
            while j < n and (pattern[j].isdigit() or pattern[j] == ","):
                j += 1
            body = pattern[i + 1 : j]
            if j < n and pattern[j] == "}" and body and body[0].isdigit() and body.count(",") <= 1:
                for count in body.split(","):
                    if count and (len(count) > 6 or int(count) > MAX_REPEAT):
                        raise InvalidQueryError(
                            _show(pattern),
                            f"repetition count {count[:20]} exceeds {MAX_REPEAT}; use a smaller count or '+'",
                        )
            i = j
            continue
        i += 1


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> UserPattern:
    """Compile a user's regular expression for linear-time matching.

    Raises:
        InvalidQueryError: for a pattern that is not a string, too long, invalid, or uses what RE2 lacks
            (look-around, back-references); the message names the pattern and the fix.
    """
    if not isinstance(pattern, str):
        raise InvalidQueryError(repr(pattern), "a regular expression must be a string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidQueryError(
            _show(pattern),
            f"the pattern has {len(pattern)} characters; at most {MAX_PATTERN_LENGTH} are accepted",
        )
    _check_repeats(pattern)
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_MEM
    try:
        regexp = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        hint = next((h for key, h in _UNSUPPORTED.items() if text.startswith(key)), None)
        if re.match(r"invalid escape sequence: \\\d", text):
            hint = "back-references (\\1) are not supported: patterns run on RE2, in time linear in the text"
        raise InvalidQueryError(
            _show(pattern), f"invalid regular expression ({text})" + (f": {hint}" if hint else "")
        ) from None
    return UserPattern(pattern, regexp)
