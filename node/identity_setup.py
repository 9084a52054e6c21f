"""The security side of setting up a real peer (``spargo node``): secure defaults, the
refusal to run unauthenticated on a reachable network, the ``[identity]`` flags, and the
membership filter of a roster (README, "Security").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from spargo.node.config import NodeConfig
from spargo.node.errors import ConfigError
from spargo.node.identity import IdentityConfig
from spargo.node.methods.registry import method_spec

if TYPE_CHECKING:
    from spargo.protocol import Roster

log = logging.getLogger("spargo.peer")


def with_swarm_key(node_table: dict[str, Any], identity: IdentityConfig) -> dict[str, Any]:
    """``[identity] swarm_key`` (a file) becomes key id 0 unless ``[node] keys`` are given."""
    key = identity.swarm_key_hex()
    if key is not None and not node_table.get("keys"):
        return {**node_table, "keys": {0: key}, "active_key_id": 0}
    return node_table


def secure_defaults(config: NodeConfig, degree: int | None) -> NodeConfig:
    """Real peers bound each neighbour's pull (docs/algorithms.md §6) when their method can and
    their config does not choose otherwise: self-centred clipping, whose radius is the median
    neighbour distance — except with exactly two neighbours, where that median is the mean of
    the two and one far neighbour sets it, so the coordinate-wise median of the three models
    (itself and the two) bounds it instead. ``degree``: the number of neighbours (None: not
    fixed, a membership swarm). Measured in README, "Security"."""
    if "robust" not in method_spec(config.method).defaults or "robust" in config.method_options:
        return config
    rule = "median" if degree == 2 else "clip"
    return config.with_overrides(method_options={**config.method_options, "robust": rule})


_LOOPBACK = ("localhost", "::1", "[::1]")


def _hosts(table: Mapping[str, Any]) -> list[str]:
    """Every host a ``[transport]`` table names (broker URL, listen host, peer addresses)."""
    from urllib.parse import urlsplit

    hosts = []
    if isinstance(table.get("url"), str):
        hosts.append(urlsplit(table["url"]).hostname or "")
    if isinstance(table.get("host"), str):
        hosts.append(table["host"])
    peers = table.get("peers")
    if isinstance(peers, Mapping):
        hosts += [str(a).rpartition(":")[0] for a in peers.values()]
    return hosts


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


def check_secure(config: NodeConfig, transport: Mapping[str, Any], insecure: bool) -> None:
    """No swarm key on a network others can reach: refuse unless ``--insecure``."""
    exposed = sorted({h for h in _hosts(transport) if not _is_loopback(h)})
    if config.keys or not exposed or insecure:
        return
    raise ConfigError(
        f"no swarm key, and {', '.join(exposed)} is not loopback: anyone who reaches it could "
        "poison or stall this peer. Create keys with `spargo keys --peers ID,... --out keys/` "
        'and set [identity] key, roster and swarm_key (README, "Real peers"), or pass '
        "--insecure to run unauthenticated anyway"
    )


def members(online: Callable[[], set[str]], roster: Roster | None) -> Callable[[], set[str]]:
    """With a roster file, only its peers count as members (forged presence is ignored)."""
    if roster is None or roster.learn:
        return online
    return lambda: {peer for peer in online() if roster.knows(peer)}


def warn_weak_identity(
    config: NodeConfig, transport: Mapping[str, Any], identity: IdentityConfig
) -> None:
    """Say what an unsigned swarm lets an insider (or, without keys, anyone) do."""
    if not config.keys:
        log.warning("no swarm key: any client that reaches the %s can forge messages",
                    transport.get("kind", "transport"))  # fmt: skip
    elif identity.key is None:
        log.warning("no identity key: any holder of the swarm key can speak for any peer "
                    "(create per-peer keys with `spargo keys`)")  # fmt: skip


def add_security_flags(p: Any) -> None:
    """The flags of ``[identity]`` and ``--insecure`` (see ``spargo keys``)."""
    p.add_argument("--identity-key", help="this peer's Ed25519 key file (spargo keys)")
    p.add_argument("--roster", help="the swarm's roster of public keys (spargo keys)")
    p.add_argument("--swarm-key", help="file holding the swarm's HMAC key (spargo keys)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback broker or peer address without a swarm key",
    )
