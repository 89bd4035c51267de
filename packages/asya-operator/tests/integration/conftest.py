from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from asya_operator.controller import Controller
from asya_operator.kubeclient import KubeClient, KubeError
from asya_operator.queues import QueueManager
from asya_testing import AmqpNames


class CountingApi:
    """Counts API requests by method, wrapping the ApiClient's single request entry point."""

    def __init__(self, api: Any) -> None:
        self.counts: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        original = api.request

        async def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.counts[method] = self.counts.get(method, 0) + 1
            self.calls.append((method, url))
            return await original(method, url, *args, **kwargs)

        api.request = counted

    def writes(self) -> int:
        return sum(n for m, n in self.counts.items() if m in ("POST", "PUT", "PATCH", "DELETE"))


@pytest.fixture(autouse=True)
def _probes_on_a_free_loopback_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operator processes started from ``os.environ`` never take 8081 or listen beyond loopback."""
    monkeypatch.setenv("ASYA_OPERATOR_HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("ASYA_OPERATOR_HTTP_PORT", "0")


@pytest.fixture
def counting(kube_api: Any) -> CountingApi:
    return CountingApi(kube_api)


@pytest.fixture
def asya_body(amqp_names: AmqpNames) -> Callable[..., dict[str, Any]]:
    def make(name: str, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "asya.sh/v1alpha1",
            "kind": "Asya",
            "metadata": {"name": name},
            "spec": {
                "queue": amqp_names.queue(name),
                "transport": {
                    "urlSecretRef": {"name": "rabbitmq", "key": "url"},
                    "exchange": amqp_names.exchange,
                    "happyEnd": amqp_names.happy_end,
                    "errorEnd": amqp_names.error_end,
                },
                "handler": "pipeline.steps:run",
                "workload": {
                    "template": {
                        "spec": {"containers": [{"name": "asya-runtime", "image": "my/model:1"}]}
                    }
                },
            },
        }
        body["spec"].update(spec)
        return body

    return make


@pytest.fixture
async def run_controller(
    kube_api: Any, kube_namespace: str, amqp_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Start a controller (as many times as a test likes); all stopped at the end."""
    stops: list[asyncio.Event] = []
    async with asyncio.TaskGroup() as tg:

        def start(url: str = amqp_url, **kw: Any) -> Controller:
            controller = Controller(
                KubeClient(kube_api), QueueManager(url), namespaces=(kube_namespace,), **kw
            )
            stop = asyncio.Event()
            stops.append(stop)

            async def run() -> None:
                try:
                    await controller.run(stop)
                finally:
                    await controller.queues.close()

            tg.create_task(run())
            controller.stop = stop  # type: ignore[attr-defined]
            return controller

        try:
            yield start
        finally:
            for stop in stops:
                stop.set()


async def _eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy without raising AssertionError (or an
    API error: the test's own client raises ``ApiException``, the operator's ``KubeError``)."""
    last: Exception | None = None
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = await check()
            if result:
                return result
        except (AssertionError, KeyError, TypeError, ApiException, KubeError) as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s: {last!r}")


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    return _eventually


@pytest.fixture
def custom(kube_api: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)
