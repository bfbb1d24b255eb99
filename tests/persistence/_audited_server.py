"""A server process for the fuzz test: records dangerous audit events while it serves.

Usage: python -m tests.persistence._audited_server DATA_ROOT USERS_FILE EVENTS_FILE

The audit hook is installed once the server listens (imports create classes with ``exec``); from then on any
``pickle.find_class``, ``os.system``, ``exec``, ``compile``, process spawn or ``marshal.loads`` is written to
EVENTS_FILE.
"""

from __future__ import annotations

import sys

from unitrack.persistence.registry import get_protocol
from unitrack.persistence.server import start_track_server

WATCHED = (
    "pickle.find_class",
    "os.system",
    "exec",
    "compile",
    "marshal.loads",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "subprocess.Popen",
    "ctypes.dlopen",
)


def main() -> None:
    data_root, users_file, events_file = sys.argv[1:4]
    backend = get_protocol(f"file://{data_root}/db.json")

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event.startswith(WATCHED):
            with open(events_file, "a", encoding="utf-8") as fh:
                fh.write(f"{event} {args!r:.200}\n")

    def listening(address: tuple[str, int]) -> None:
        sys.addaudithook(hook)
        print(f"listening on {address[0]}:{address[1]}", flush=True)

    start_track_server(backend, "127.0.0.1", 0, users=users_file, on_listening=listening)
    backend.close()


if __name__ == "__main__":
    main()
