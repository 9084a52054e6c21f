"""``spargo keys``: create the secrets of a swarm — its HMAC key, one Ed25519 key per peer, the
roster of public keys and, for a Mosquitto broker, per-peer passwords and the pattern ACL.

    spargo keys --peers peer-0,peer-1,peer-2 --swarm lab --out keys/

writes into ``keys/`` (secret files with mode 0600):

- ``swarm.key``: the swarm's HMAC-SHA256 key (hex), the cheap outer check of every frame;
- ``<peer>.key``: each peer's private Ed25519 key; ``roster.toml``: every peer's public key;
- ``passwords.toml``: a random MQTT password per peer (username = peer id), ``mosquitto.passwd``
  (hashed by ``mosquitto_passwd``, when installed) and ``mosquitto.acl`` (``swarm_acl_rules``).

Each peer then needs its own key file, ``swarm.key`` and ``roster.toml``:
``[identity] key = "keys/peer-0.key", roster = "keys/roster.toml", swarm_key = "keys/swarm.key"``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spargo.node.errors import ConfigError
from spargo.node.identity import write_roster, write_secret, write_signer
from spargo.node.transports.wire import peer_id_problem
from spargo.protocol import Signer

#: The MQTT user for ``spargo monitor`` in the passwords ``spargo keys`` writes.
MONITOR_USER = "monitor"


@dataclass(frozen=True)
class SwarmSecrets:
    """Paths of what ``make_swarm_secrets`` wrote."""

    directory: Path
    swarm_key: Path
    roster: Path
    peer_keys: dict[str, Path]
    passwords: dict[str, str]
    password_file: Path | None  # None when no swarm name was given or no mosquitto_passwd
    acl_file: Path | None


def _check_peers(peers: list[str]) -> None:
    if len(peers) < 1 or len(set(peers)) != len(peers) or MONITOR_USER in peers:
        raise ConfigError(
            f"--peers must name distinct peer ids other than {MONITOR_USER!r}, "
            f"got {','.join(peers)!r}"
        )
    for peer in peers:
        problem = peer_id_problem(peer)
        if problem is not None:
            raise ConfigError(f"--peers: {problem}")


def make_swarm_secrets(
    directory: Path,
    peers: list[str],
    swarm: str | None = None,
    *,
    hash_passwords: bool = True,
    monitor_reads_traffic: bool = False,
) -> SwarmSecrets:
    """Write a swarm's secrets into ``directory`` (see the module docstring); returns the paths.
    With ``swarm`` also MQTT passwords and the ACL (``hash_passwords``: run mosquitto_passwd).
    ``monitor_reads_traffic``: the ``monitor`` user may also read every inbox (the dashboard's
    traffic edges; it then sees the models peers exchange: a lab's choice, off by default)."""
    from spargo.node.broker import BrokerError
    from spargo.node.broker_auth import (
        AclRule,
        swarm_acl_rules,
        write_acl_file,
        write_password_file,
    )

    _check_peers(peers)
    directory.mkdir(parents=True, exist_ok=True)
    swarm_key = write_secret(directory / "swarm.key", secrets.token_hex(32) + "\n")
    signers = {peer: Signer.generate() for peer in peers}
    peer_keys = {p: write_signer(directory / f"{p}.key", s) for p, s in signers.items()}
    roster = write_roster(directory / "roster.toml", {p: s.public_key for p, s in signers.items()})
    passwords: dict[str, str] = {}
    password_file = acl_file = None
    if swarm is not None:
        # "monitor": for `spargo monitor` (the ACL lets any user read presence and status).
        passwords = {peer: secrets.token_urlsafe(18) for peer in [*peers, MONITOR_USER]}
        lines = ["[passwords]", *(f'"{p}" = "{pw}"' for p, pw in passwords.items())]
        write_secret(directory / "passwords.toml", "\n".join(lines) + "\n")
        users = {MONITOR_USER: [AclRule("read", f"spargo/{swarm}/inbox/#")]}
        acl_file = write_acl_file(
            directory / "mosquitto.acl",
            users if monitor_reads_traffic else {},
            swarm_acl_rules(swarm),
        )
        if hash_passwords:
            try:
                password_file = write_password_file(directory / "mosquitto.passwd", passwords)
            except BrokerError:
                password_file = None  # no mosquitto_passwd here: hash on the broker's host
    return SwarmSecrets(directory, swarm_key, roster, peer_keys, passwords, password_file, acl_file)


def add_parser(subparsers: Any) -> None:
    """Register ``spargo keys``."""
    p = subparsers.add_parser(
        "keys",
        help="create a swarm's keys, roster, MQTT passwords and ACL",
        description="Create the secrets of a swarm (see README, 'Real peers').",
    )
    p.add_argument("--peers", required=True, help="comma-separated peer ids of the swarm")
    p.add_argument("--out", required=True, help="directory to write into (created)")
    p.add_argument("--swarm", help="swarm name: also write MQTT passwords and the broker ACL")


def run(args: argparse.Namespace) -> int:
    """Entry of ``spargo keys``."""
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; choose a new directory (keys are secrets)")
    made = make_swarm_secrets(out, peers, args.swarm)
    print(f"wrote the keys of {len(peers)} peers to {out}/ (secret files are mode 600)")
    print(f"  {made.swarm_key.name}: swarm HMAC key; {made.roster.name}: public keys")
    print(f"  <peer>.key: one private key per peer ({', '.join(sorted(made.peer_keys))})")
    if made.acl_file is not None:
        hashed = made.password_file.name if made.password_file else "(no mosquitto_passwd)"
        print(f"  passwords.toml, {hashed}, {made.acl_file.name}: for the broker")
    print("give each peer its key, swarm.key and roster.toml, and in its config:")
    print(f'  [identity]\n  key = "{out}/{peers[0]}.key"\n  roster = "{out}/roster.toml"')
    print(f'  swarm_key = "{out}/swarm.key"')
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone ``python -m spargo.node.keys``."""
    parser = argparse.ArgumentParser(prog="spargo")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["keys", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"spargo keys: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
