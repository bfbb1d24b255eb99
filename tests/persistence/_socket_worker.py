"""A client process for the socket tests: log COUNT values (no step) into its own trial, then close.

Usage: python -m tests.persistence._socket_worker URI NAME COUNT

Prints ``half`` once the first half is acknowledged by the server, and ``done`` at the end.
"""

from __future__ import annotations

import sys

from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Project, Trial


def main() -> None:
    uri, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    protocol = get_protocol(uri)
    protocol.new_project(Project(name="load"))
    trial = protocol.new_trial(Trial(name=name, project_id="load", parameters={"worker": name}))
    if trial is None:
        raise SystemExit(f"trial {name} exists")
    for i in range(count):
        protocol.log_trial_metrics(trial, v=float(i))
        if i == count // 2:
            protocol.commit()  # flushed and acknowledged
            print("half", flush=True)
    protocol.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
