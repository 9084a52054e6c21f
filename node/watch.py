"""The swarm watcher behind ``spargo monitor``: presence and status events from the broker.

It reads the retained ``presence/<peer_id>`` and ``status/<peer_id>`` topics of one swarm
through a read-only MQTT connection (``transports.mqtt.observe``), survives lost connections
with jittered backoff, and yields decoded events; what to make of them is ``node.monitor``'s
business. Payloads are peer-supplied: anything that is not a JSON object arrives as None.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator

from spargo.node.errors import ConnectError, NodeError
from spargo.node.transports.mqtt_config import MqttConfig
from spargo.node.transports.mqtt_observe import observe
from spargo.node.transports.mqtt_wire import Topics, json_object, unpack_envelope
from spargo.node.transports.wire import backoff_delay_s

LOG = logging.getLogger(__name__)

#: ``(kind, peer_id, payload)``: kind is "connected", "presence", "status" or "traffic".
SwarmEvent = tuple[str, str, dict[str, object] | None]


async def watch_swarm(
    config: MqttConfig, *, traffic: bool = False
) -> AsyncGenerator[SwarmEvent, None]:
    """Yield the presence and status events of ``config.swarm``, reconnecting as needed.

    After each (re)connection and subscription comes one ``("connected", "", None)``, then
    the retained messages, then live ones. A lost connection is re-established with backoff;
    ConnectError if the very first connection fails. With ``traffic``, also one
    ``("traffic", receiver, {"from": sender, "bytes": n})`` per chunk seen on the inboxes
    (only the envelope's sender is read); a broker whose ACL refuses the inboxes to this
    observer gets one retry without them (a warning: no traffic events).
    """
    topics = Topics(config.swarm)
    rng = random.Random(config.seed)
    failures = 0
    ever_connected = False
    while True:
        wanted = [topics.presence(), topics.status()] + ([topics.inbox("+")] if traffic else [])
        messages = observe(config, wanted)
        try:
            async for message in messages:
                if message is None:
                    failures, ever_connected = 0, True
                    yield "connected", "", None
                    continue
                event = swarm_event(topics, *message)
                if event is not None:
                    yield event
        except ConnectError as exc:
            if not ever_connected and traffic:
                LOG.warning("no traffic events: the broker refused the inbox topics (%s)", exc)
                traffic = False
                continue
            if not ever_connected:
                raise
            LOG.warning("lost the broker connection: %s", exc)
        finally:
            await messages.aclose()
        failures += 1
        delay_s = backoff_delay_s(failures, config.backoff_min_s, config.backoff_max_s, rng)
        await asyncio.sleep(delay_s)


def swarm_event(topics: Topics, topic: str, payload: bytes) -> SwarmEvent | None:
    """The event for one message of the swarm, or None for a topic the monitor ignores (and
    for an inbox chunk whose envelope does not parse: its receiver counts it as a drop)."""
    receiver = topics.inbox_receiver(topic)
    if receiver is not None:
        try:
            sender, _ = unpack_envelope(payload)
        except NodeError:
            return None
        return "traffic", receiver, {"from": sender, "bytes": len(payload)}
    parsed = topics.split(topic)
    if parsed is None or parsed[0] not in ("presence", "status"):
        return None
    kind, peer_id = parsed
    return kind, peer_id, json_object(payload)
