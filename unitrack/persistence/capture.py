"""Keep the last writes to a stream while passing them through (track's ``RingOutputDecorator``).

``TrialLogger.capture_output(n)`` puts one in front of ``sys.stdout`` (and ``sys.stderr``); the run's output
still reaches the terminal, and the last ``n`` writes are kept: ``logger.stdout.raw()`` lists them, as track's
did, and the logger records their text in the trial's metadata when it finishes.

Example:
    >>> import io
    >>> ring = RingOutput(io.StringIO(), n_entries=3)
    >>> for i in range(5):
    ...     print(f"line {i}", file=ring)
    >>> ring.raw()
    ['\\n', 'line 4', '\\n']
    >>> ring.file.getvalue().count("line")
    5
"""

from __future__ import annotations

from collections import deque
from typing import IO, Any

__all__ = ["RingOutput"]


class RingOutput:
    """A text stream that writes through to ``file`` and keeps the last ``n_entries`` writes.

    Args:
        file: Where writes go (None: nowhere, only kept).
        n_entries: How many writes to keep.
    """

    def __init__(self, file: IO[str] | None = None, n_entries: int = 50) -> None:
        self.file = file
        self.entries: deque[str] = deque(maxlen=max(1, int(n_entries)))

    def write(self, text: str) -> int:
        """Keep ``text`` and pass it on."""
        self.entries.append(text)
        if self.file is not None:
            self.file.write(text)
        return len(text)

    def flush(self) -> None:
        """Flush the underlying stream."""
        if self.file is not None:
            self.file.flush()

    def raw(self) -> list[str]:
        """The kept writes, oldest first."""
        return list(self.entries)

    def out(self) -> str:
        """The kept writes joined into one text."""
        return "".join(self.entries)

    def __getattr__(self, name: str) -> Any:
        # encoding, isatty(), fileno()...: whatever code printing to sys.stdout may ask of the real stream.
        file = self.__dict__.get("file")
        if name.startswith("__") or file is None:
            raise AttributeError(name)
        return getattr(file, name)
