"""Smoke tests: the real services the rest of the suite relies on answer."""

from __future__ import annotations

import asyncio

import aiormq
import asyncpg

from asya_testing import AmqpNames


async def test_publish_and_consume_one_message(amqp_url: str, amqp_names: AmqpNames) -> None:
    queue = amqp_names.queue("smoke")
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.exchange_declare(amqp_names.exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(queue, durable=True)
        await channel.queue_bind(queue, amqp_names.exchange, routing_key=queue)
        confirm = await channel.basic_publish(
            b'{"hello": "world"}',
            exchange=amqp_names.exchange,
            routing_key=queue,
            properties=aiormq.spec.Basic.Properties(delivery_mode=2),
            mandatory=True,
        )
        assert isinstance(confirm, aiormq.spec.Basic.Ack)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            await message.channel.basic_ack(message.delivery_tag)
            if not got.done():
                got.set_result(message.body)

        await channel.basic_consume(queue, on_message)
        async with asyncio.timeout(10):
            assert await got == b'{"hello": "world"}'
    finally:
        await connection.close()


async def test_names_are_isolated_per_test(amqp_names: AmqpNames) -> None:
    assert amqp_names.suffix in amqp_names.queue("x")
    assert amqp_names.suffix in amqp_names.exchange
    assert amqp_names.happy_end != "happy-end"


async def test_query_postgres(postgres_database: str) -> None:
    conn = await asyncpg.connect(postgres_database)
    try:
        await conn.execute("create table t (id serial primary key, v text)")
        await conn.execute("insert into t (v) values ($1)", "'; drop table t; --")
        assert await conn.fetchval("select v from t") == "'; drop table t; --"
        assert await conn.fetchval("select current_database()") in postgres_database
    finally:
        await conn.close()
