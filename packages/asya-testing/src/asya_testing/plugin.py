"""The pytest plugin (entry point ``pytest11: asya``) that every Asya package's tests use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .amqp import AmqpNames, isolated_names
from .postgres import fresh_database
from .services import in_ci, service_url

FOLDER_MARKERS = ("integration", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real services (tests/integration/)")
    config.addinivalue_line("markers", "e2e: whole-system tests (tests-e2e/, tests/e2e/)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for marker in FOLDER_MARKERS:
            if marker in parts or (marker == "e2e" and "tests-e2e" in parts):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a real RabbitMQ (environment, else testcontainers, else skip / fail in CI)."""
    with service_url("amqp") as url:
        yield url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a real PostgreSQL (environment, else testcontainers, else skip / fail in CI)."""
    with service_url("postgres") as url:
        yield url


@pytest.fixture
async def amqp_names(amqp_url: str) -> AsyncIterator[AmqpNames]:
    """Unique exchange and queue names for this test, deleted afterwards."""
    async with isolated_names(amqp_url) as names:
        yield names


@pytest.fixture
async def postgres_database(database_url: str) -> AsyncIterator[str]:
    """URL of a fresh, empty PostgreSQL database for this test, dropped afterwards."""
    async with fresh_database(database_url) as url:
        yield url


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (they would outlive their owner)."""
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() + ":" + repr(t.get_coro()) for t in leaked))
        pytest.fail(f"{request.node.nodeid} left {len(leaked)} task(s) running: {names}")


_skipped_in_ci: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _skipped_in_ci.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test is a failure: a skip there hides missing setup."""
    if _skipped_in_ci and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"CI is set and {len(_skipped_in_ci)} test(s) were skipped:")
            for line in _skipped_in_ci:
                reporter.write_line(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


from .kube_fixtures import kube_api, kube_control_plane, kube_namespace  # noqa: E402

__all__ = ["kube_api", "kube_control_plane", "kube_namespace"]
