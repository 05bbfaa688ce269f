from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(workdir=tmp_path_factory.mktemp("e2e"))
    try:
        running.start()
    except BaseException as exc:
        logs = "\n\n".join(f"--- {name} log ---\n{text}" for name, text in running.logs())
        running.stop()
        raise AssertionError(f"The stack did not start: {exc}\n\n{logs}") from exc
    try:
        yield running
    finally:
        running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    # A failing step shows what gunicorn, the worker and beat said, not only the assertion.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    running = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(running, Stack):
        for name, text in running.logs():
            report.sections.append((f"{name} log (last lines)", text))
