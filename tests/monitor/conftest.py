import io
from datetime import datetime

import pytest

from unitrack.monitor.hooks.tensorboard import close_writers

FIXED = datetime(2020, 11, 18, 13, 17)


def fixed_clock():
    return FIXED


class Sink:
    """Stands in for an Experiment: keeps messages with xmen's keep/leader rules."""

    def __init__(self):
        self.messages = {}
        self.calls = 0

    def message(self, values, keep="latest", leader=None):
        self.calls += 1
        better = {
            "latest": lambda new, old: True,
            "min": lambda new, old: new < old,
            "max": lambda new, old: new > old,
        }[keep]
        if leader is not None:
            old = self.messages.get(leader)
            if old is None or better(values[leader], old):
                self.messages.update(values)
            return
        for k, v in values.items():
            if k not in self.messages or better(v, self.messages[k]):
                self.messages[k] = v


@pytest.fixture
def out():
    return io.StringIO()


@pytest.fixture(autouse=True)
def _close_tensorboard_writers():
    yield
    close_writers()
