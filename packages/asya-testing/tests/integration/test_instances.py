"""Private service instances: their own ports and data, restarted and crashed for real, and
gone afterwards; what was confirmed before a crash is there after it."""

from __future__ import annotations

import asyncio
import os

import aiormq
import asyncpg

from asya_testing.instances import postgres_instance, rabbitmq_instance


async def _queue_depth(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, durable=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


async def _publish(url: str, queue: str, count: int) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(queue, durable=True)
        props = aiormq.spec.Basic.Properties(delivery_mode=2)
        for i in range(count):
            await channel.basic_publish(str(i).encode(), routing_key=queue, properties=props)
    finally:
        await connection.close()


def test_a_private_broker_keeps_confirmed_messages_through_a_restart_and_a_crash(
    amqp_url: str,
) -> None:
    with rabbitmq_instance() as broker:
        assert broker.url != amqp_url
        assert str(broker.port) in broker.url
        asyncio.run(_publish(broker.url, "kept", 5))
        broker.restart(downtime=0.5)
        assert asyncio.run(_queue_depth(broker.url, "kept")) == 5
        broker.kill()
        broker.start()
        assert asyncio.run(_queue_depth(broker.url, "kept")) == 5
        pid = broker.pid()
        assert pid is not None
    assert not _alive(pid)


def test_a_private_database_recovers_from_a_crash(database_url: str) -> None:
    async def write(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("create table kept (n int); insert into kept values (1), (2)")
        finally:
            await conn.close()

    async def count(url: str) -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("select count(*) from kept"))
        finally:
            await conn.close()

    with postgres_instance() as database:
        assert database.url != database_url
        asyncio.run(write(database.url))
        database.restart(downtime=0.5, crash=True)
        assert asyncio.run(count(database.url)) == 2
        pid = database.pid()
        assert pid is not None
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
