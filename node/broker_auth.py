"""Mosquitto password and ACL files: who may connect, and which topics each client may use.

Used by ``spargo lab`` and ``spargo keys``, the test fixtures and anyone setting up an
authenticated broker (``swarm_acl_rules``: the recommended per-swarm ACL, docs/MQTT.md).
Passwords are hashed by Mosquitto's own ``mosquitto_passwd``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spargo.node.broker import BrokerError, find_executable

Access = Literal["read", "write", "readwrite", "deny"]


def write_password_file(path: Path, credentials: Mapping[str, str]) -> Path:
    """Write a Mosquitto password file (hashed by ``mosquitto_passwd -b``) for ``credentials``."""
    if not credentials:
        raise ValueError("credentials is empty: give at least one username -> password")
    tool = find_executable("mosquitto_passwd")
    path = Path(path)
    path.write_text("")
    path.chmod(0o600)
    for username, password in credentials.items():
        if not username or ":" in username:
            raise ValueError(f"username {username!r} must be non-empty and contain no ':'")
        result = subprocess.run(
            [tool, "-b", str(path), username, password],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise BrokerError(f"mosquitto_passwd failed for {username!r}: {result.stderr.strip()}")
    return path


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ``topic`` line of a Mosquitto ACL file; ``%u``/``%c`` are allowed in patterns."""

    access: Access
    topic: str

    def line(self, keyword: str = "topic") -> str:
        return f"{keyword} {self.access} {self.topic}"


def swarm_acl_rules(swarm: str) -> list[AclRule]:
    """The pattern ACL of a secure swarm, with usernames equal to peer ids (docs/MQTT.md): a
    client reads only its own inbox, writes into others' inboxes only under its own id
    (``inbox/<receiver>/<sender>``), and publishes presence and status only for itself."""
    prefix = f"spargo/{swarm}"
    return [
        AclRule("read", f"{prefix}/inbox/%u/+"),
        AclRule("write", f"{prefix}/inbox/+/%u"),
        AclRule("readwrite", f"{prefix}/presence/%u"),
        AclRule("readwrite", f"{prefix}/status/%u"),
        AclRule("read", f"{prefix}/presence/+"),
        AclRule("read", f"{prefix}/status/+"),
    ]


def write_acl_file(
    path: Path,
    users: Mapping[str, Sequence[AclRule]],
    patterns: Sequence[AclRule] = (),
) -> Path:
    """Write a Mosquitto ACL file: per-user rules plus ``pattern`` rules that apply to all."""
    lines = [rule.line("pattern") for rule in patterns]
    for username, rules in users.items():
        lines.append("")
        lines.append(f"user {username}")
        lines.extend(rule.line() for rule in rules)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
