"""Suite-wide rules.

Under ``CI=true`` a skipped test is a failure: a green CI run must mean that the e2e and
integration suites really ran (a missing Docker engine, binary or privilege would
otherwise turn them into silent skips). On users' machines skips stay skips, each with
its reason. Tests that cannot run on CI's machine by design (the kind suite: no kind,
no registry) carry ``@pytest.mark.ci_may_skip``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# The pytest plugin nodeload ships is tested with pytest's own pytester (tests/e2e/test_pytest_plugin.py).
pytest_plugins = ["pytester"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    # A push typed at a terminal starts a background session by default, and a test that lets
    # a push write to the terminal pytest runs in would leave one behind: the suite's pushes
    # run without one, and the tests of sessions say what they want.
    os.environ.setdefault("NODELOAD_PERSIST", "0")
    config.addinivalue_line("markers", "ci_may_skip: a skip of this test is allowed under CI=true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests on a real cluster (tests/cluster) run last: on a fresh machine, Kubernetes is
    built in the background meanwhile (see nodeload.pytest_plugin)."""
    items.sort(key=lambda item: "nodeload_cluster" in getattr(item, "fixturenames", ()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and _in_ci() and item.get_closest_marker("ci_may_skip") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every suite must run: {reason}"
