"""The testcontainers branch of the service fixtures, proven: in this module ``amqp_url`` and
``database_url`` come from containers that testcontainers starts through podman's
Docker-compatible API (``podman system service``), from the RabbitMQ and PostgreSQL images
scripts/images.sh builds (``ASYA_TEST_RABBITMQ_IMAGE`` / ``ASYA_TEST_POSTGRES_IMAGE`` name others).
Ryuk is disabled: its image is not here, and the fixtures stop their containers themselves.
testcontainers reads its settings when first imported, which nothing before this module does
(the other modules have URLs in the environment).

The rest of the suite keeps the faster services from ``ASYA_TEST_AMQP_URL`` /
``ASYA_TEST_DATABASE_URL``; here those are hidden so the fixtures must take the other branch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_testing import AmqpClient, AmqpNames
from asya_testing.podman import podman, podman_service, require_images
from asya_testing.processes import runtime_process, sidecar_process
from asya_testing.services import AMQP_ENV, DATABASE_ENV, service_url

ROOT = Path(__file__).resolve().parents[1]
RABBITMQ_IMAGE = os.environ.get("ASYA_TEST_RABBITMQ_IMAGE", "localhost/asya-test-rabbitmq:bookworm")
POSTGRES_IMAGE = os.environ.get("ASYA_TEST_POSTGRES_IMAGE", "localhost/asya-test-postgres:bookworm")
ENV_URLS = {os.environ.get(AMQP_ENV), os.environ.get(DATABASE_ENV)} - {None}


@pytest.fixture(scope="module")
def docker_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """podman as the Docker engine, and no service URLs in the environment."""
    require_images(RABBITMQ_IMAGE, POSTGRES_IMAGE)
    with (
        podman_service(tmp_path_factory.mktemp("podman")) as docker_host,
        pytest.MonkeyPatch.context() as env,
    ):
        env.delenv(AMQP_ENV, raising=False)
        env.delenv(DATABASE_ENV, raising=False)
        env.setenv("DOCKER_HOST", docker_host)
        env.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
        # This machine may itself be a container; podman runs beside the tests, not around them,
        # so its published ports are on our loopback (not on a gateway or bridge address).
        env.setenv("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
        env.setenv("ASYA_TEST_RABBITMQ_IMAGE", RABBITMQ_IMAGE)
        env.setenv("ASYA_TEST_POSTGRES_IMAGE", POSTGRES_IMAGE)
        yield


def _containers_from(image: str) -> list[str]:
    out = podman("ps", "--filter", f"ancestor={image}", "--format", "{{.ID}}")
    return out.split()


# These replace the plugin's session fixtures of the same names for this module only.
@pytest.fixture(scope="module")
def amqp_url(docker_api: None) -> Iterator[str]:
    before = _containers_from(RABBITMQ_IMAGE)
    with service_url("amqp") as url:
        assert len(_containers_from(RABBITMQ_IMAGE)) == len(before) + 1
        yield url
    assert _containers_from(RABBITMQ_IMAGE) == before, "the RabbitMQ container was not removed"


@pytest.fixture(scope="module")
def database_url(docker_api: None) -> Iterator[str]:
    before = _containers_from(POSTGRES_IMAGE)
    with service_url("postgres") as url:
        assert len(_containers_from(POSTGRES_IMAGE)) == len(before) + 1
        yield url
    assert _containers_from(POSTGRES_IMAGE) == before, "the PostgreSQL container was not removed"


def test_urls_are_the_containers_not_the_environment(amqp_url: str, database_url: str) -> None:
    assert amqp_url not in ENV_URLS
    assert database_url not in ENV_URLS
    assert amqp_url.startswith("amqp://")
    assert "@127.0.0.1:" in amqp_url
    assert database_url.startswith("postgresql://")
    assert "@127.0.0.1:" in database_url


async def test_a_fresh_database_in_the_container(postgres_database: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_database)
    try:
        await conn.execute("create table t (id int primary key, body text not null)")
        await conn.execute("insert into t values (1, 'kept')")
        assert await conn.fetchval("select body from t where id = 1") == "kept"
        assert "PostgreSQL" in await conn.fetchval("select version()")
    finally:
        await conn.close()


async def test_a_seed_step_on_the_container_broker(
    amqp_url: str, amqp_names: AmqpNames, tmp_path: Path
) -> None:
    """A real runtime and sidecar (the seed's preprocess) consume from the container's broker
    and route the result to happy-end."""
    queue = amqp_names.queue("preprocess")
    async with AmqpClient(amqp_url, amqp_names) as amqp:
        await amqp.declare(queue, amqp_names.happy_end, amqp_names.error_end)
        with runtime_process(
            "handlers:preprocess", python_path=[str(ROOT / "examples/seed")], log_dir=tmp_path
        ) as (_runtime, socket_path):
            env = {
                "ASYA_RABBITMQ_URL": amqp_url,
                "ASYA_RABBITMQ_EXCHANGE": amqp_names.exchange,
                "ASYA_HAPPY_END_QUEUE": amqp_names.happy_end,
                "ASYA_ERROR_END_QUEUE": amqp_names.error_end,
                "ASYA_EVENTS_EXCHANGE": amqp_names.events_exchange,
                "ASYA_SOCKET_PATH": socket_path,
            }
            with sidecar_process(queue, env=env, log_dir=tmp_path) as sidecar:
                await amqp.publish(
                    queue,
                    {
                        "id": "tc-1",
                        "route": {"steps": [queue], "current": 0},
                        "payload": {"text": "Hello world"},
                    },
                )
                try:
                    [done] = await amqp.take(amqp_names.happy_end, 1, timeout=60)
                except TimeoutError:
                    pytest.fail(f"no result on happy-end; sidecar log:\n{sidecar.log()}")
    assert done["id"] == "tc-1"
    assert done["payload"] == {"tokens": [1, 2]}
