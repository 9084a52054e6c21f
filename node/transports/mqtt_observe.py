"""The read-only MQTT connection behind ``spargo monitor`` (``node.watch``): a clean session,
no presence, no will; errors translated like the transport's."""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, Sequence

import aiomqtt

from spargo.node.transports.mqtt_config import MqttConfig
from spargo.node.transports.mqtt_session import NODELAY, translate


def _observer(config: MqttConfig) -> aiomqtt.Client:
    host, port, _ = config.endpoint()
    return aiomqtt.Client(
        host,
        port,
        username=config.username,
        password=config.password,
        clean_session=True,  # an observer needs no session: retained messages suffice
        timeout=config.connect_timeout_s,
        keepalive=config.keepalive_s,
        tls_context=config.ssl_context(),
        socket_options=NODELAY,
    )


async def observe(
    config: MqttConfig, topics: Sequence[str]
) -> AsyncGenerator[tuple[str, bytes] | None, None]:
    """One read-only connection: ``None`` once subscribed to ``topics``, then ``(topic, payload)``.

    For observers such as ``spargo monitor``: a clean session, no presence, no will. Ends with
    ``ConnectError`` when the connection fails or is lost (the caller decides on retries).
    """
    what = f"observing swarm {config.swarm!r} on {config.endpoint()[0]}"
    try:
        async with _observer(config) as client:
            for topic in topics:
                await client.subscribe(topic, qos=1, timeout=config.publish_timeout_s)
            yield None
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    yield message.topic.value, bytes(payload)
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
        raise translate(exc, what) from exc
