"""Fault tests: a seeded ``rng`` per test, whose seed is printed when the test fails."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.faults.harness import SEED_ENV, fault_seed, reap_leftovers


@pytest.fixture(autouse=True)
def _no_worker_left_behind() -> Iterator[None]:
    yield
    reap_leftovers()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> Iterator[random.Random]:
    seed = fault_seed()
    request.node.fault_seed = seed
    yield random.Random(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    seed = getattr(item, "fault_seed", None)
    if seed is not None and report.failed:
        report.sections.append(("fault seed", f"replay with {SEED_ENV}={seed}"))
    return report
