"""A peer's identity on disk: its Ed25519 key file, the swarm's roster file, and what the node
does with them (``Credentials``).

- Key file (``<peer>.key``): the 32 private-key bytes in hex on one line, readable only by
  its owner (mode 0600; a key file others can read is refused).
- Roster file (``roster.toml``): ``[roster]`` with one ``"peer-id" = "public key hex"`` line per
  peer of the swarm. A peer with a roster accepts only messages signed by the key listed for
  the sender; without one, a peer of a keyed swarm pins the key each peer announces in its
  first HMAC-authenticated Hello (protocol/identity.py).

``spargo keys`` (``node.keys``) writes these files; ``spargo node`` reads them from the
``[identity]`` table (``key``, ``roster``) or ``--identity-key`` / ``--roster``.
"""

from __future__ import annotations

import os
import secrets
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spargo.node.errors import ConfigError
from spargo.protocol import PUBLIC_KEY_BYTES, Roster, Signer

__all__ = [
    "Credentials",
    "IdentityConfig",
    "load_roster",
    "load_signer",
    "new_boot_id",
    "write_roster",
    "write_secret",
    "write_signer",
]


def new_boot_id() -> int:
    """A random 64-bit incarnation id for this process (PROTOCOL.md §2: ``boot``)."""
    return secrets.randbits(64)


@dataclass
class Credentials:
    """What a node signs with and checks against; ``boot_id`` None draws a random one."""

    signer: Signer | None = None
    roster: Roster | None = None
    boot_id: int | None = None


@dataclass(frozen=True)
class IdentityConfig:
    """The ``[identity]`` table: file paths, checked when the peer is set up."""

    key: str | None = None  # this peer's Ed25519 key file
    roster: str | None = None  # the swarm's roster file
    swarm_key: str | None = None  # a file holding the swarm's HMAC key (hex), as key id 0

    @classmethod
    def from_table(cls, table: Mapping[str, object], source: str) -> IdentityConfig:
        """From the ``[identity]`` table (unknown keys and non-path values: ConfigError)."""
        names = ("key", "roster", "swarm_key")
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)} in [identity]; "
                f"use {', '.join(names)}"
            )
        paths: dict[str, str | None] = {}
        for name in names:
            value = table.get(name)
            if value is not None and not isinstance(value, str | Path):
                raise ConfigError(f"[identity] {name} must be a file path, got {value!r}")
            paths[name] = None if value is None else str(value)
        return cls(**paths)

    def swarm_key_hex(self) -> str | None:
        """The swarm key from ``swarm_key`` (hex), or None when no file is named."""
        if self.swarm_key is None:
            return None
        path = Path(self.swarm_key)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"swarm key {path}: {exc.strerror or exc}") from None
        _owner_only(path, "swarm key")
        return text

    def credentials(self, peer_id: str, swarm_keyed: bool) -> Credentials:
        """Load the files (ConfigError naming the file on any problem)."""
        signer = load_signer(Path(self.key)) if self.key else None
        if self.roster:
            roster = load_roster(Path(self.roster))
            if signer is not None and not roster.verify(peer_id, b"probe", signer.sign(b"probe")):
                raise ConfigError(
                    f"roster {self.roster} does not list the public key of {self.key} for "
                    f"{peer_id!r}; regenerate the roster with `spargo keys`"
                )
        elif signer is not None and swarm_keyed:
            roster = Roster(learn=True)  # pin keys announced in HMAC-authenticated Hellos
        else:
            roster = None
        return Credentials(signer, roster)


def write_signer(path: Path, signer: Signer) -> Path:
    """Write ``signer``'s private key to ``path``, readable only by its owner."""
    return write_secret(path, signer.private_bytes().hex() + "\n")


def load_signer(path: Path) -> Signer:
    """Read a key file written by ``write_signer`` (ConfigError naming the file)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"identity key {path}: {exc.strerror or exc}") from None
    _owner_only(path, "identity key")
    try:
        raw = bytes.fromhex(text)
        return Signer(raw)
    except ValueError:
        raise ConfigError(
            f"identity key {path} is not 64 hex digits; create one with `spargo keys`"
        ) from None


def _owner_only(path: Path, what: str) -> None:
    """ConfigError when a secret file can be read or written by others than its owner."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is open to others (mode {oct(mode & 0o777)}); run: chmod 600 {path}"
        )


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, readable only by its owner."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)
    return path


def write_roster(path: Path, keys: Mapping[str, bytes]) -> Path:
    """Write a roster file: each peer id with its public key."""
    lines = ["# spargo roster: the Ed25519 public key of each peer (spargo keys)", "[roster]"]
    lines += [f'"{peer}" = "{key.hex()}"' for peer, key in sorted(keys.items())]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def load_roster(path: Path) -> Roster:
    """Read a roster file (ConfigError naming the file and the bad entry)."""
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle).get("roster")
    except OSError as exc:
        raise ConfigError(f"roster {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"roster {path}: not valid TOML ({exc})") from None
    if not isinstance(table, dict) or not table:
        raise ConfigError(f'roster {path} has no [roster] table of "peer" = "public key hex"')
    keys: dict[str, bytes] = {}
    for peer, value in table.items():
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ConfigError(
                f"roster {path}: the key of {peer!r} must be {2 * PUBLIC_KEY_BYTES} hex digits"
            )
        keys[peer] = raw
    return Roster(keys)
