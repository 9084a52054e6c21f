"""Fixtures for the real-network transport tests: Mosquitto brokers and a throwaway TLS PKI.

Every broker is started by a fixture on a free loopback port with a generated config and is
stopped afterwards; no test talks to a broker it did not start. Brokers are session-scoped
(one start per pytest run) except where a test kills its broker.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spargo.node.broker import (
    Mosquitto,
    MosquittoConfig,
    find_executable,
)
from spargo.node.broker_auth import AclRule, write_acl_file, write_password_file

#: Users of the authenticated broker and what each may do (see ``auth_broker``).
AUTH_SWARM = "secure"
AUTH_USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "watcher": "watch-pw"}


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run([find_executable("openssl"), *args], check=True, capture_output=True)


def _issue(directory: Path, name: str, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Generate the PKI with the ``openssl`` command-line tool (part of every test machine)."""
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
             "-subj", "/CN=spargo test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    server_cert, server_key = _issue(directory, "server", ca, ca_key)
    client_cert, client_key = _issue(directory, "client", ca, ca_key)
    return Pki(ca, server_cert, server_key, client_cert, client_key)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A plain (anonymous, plaintext) broker shared by the whole session."""
    with Mosquitto(MosquittoConfig()) as broker:
        yield broker


@pytest.fixture(scope="session")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Passwords and an ACL: alice may send only to bob's inbox, bob and carol to anyone."""
    directory = tmp_path_factory.mktemp("auth-broker")
    prefix = f"spargo/{AUTH_SWARM}"
    patterns = [
        AclRule("read", f"{prefix}/inbox/%u/+"),
        AclRule("readwrite", f"{prefix}/presence/%u"),
        AclRule("readwrite", f"{prefix}/status/%u"),
        AclRule("read", f"{prefix}/presence/+"),
        AclRule("read", f"{prefix}/status/+"),
    ]
    users = {
        "alice": [AclRule("write", f"{prefix}/inbox/bob/alice")],
        "bob": [AclRule("write", f"{prefix}/inbox/+/bob")],
        "carol": [AclRule("write", f"{prefix}/inbox/+/carol")],
    }
    config = MosquittoConfig(
        password_file=write_password_file(directory / "passwd", AUTH_USERS),
        acl_file=write_acl_file(directory / "acl", users, patterns),
    )
    with Mosquitto(config) as broker:
        yield broker


@pytest.fixture(scope="session")
def tls_broker(pki: Pki) -> Iterator[Mosquitto]:
    """A broker whose only listener speaks TLS with the test PKI's server certificate."""
    config = MosquittoConfig(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca)
    with Mosquitto(config) as broker:
        yield broker


@pytest.fixture(scope="session")
def _swarm_numbers() -> Iterator[int]:
    return itertools.count()


@pytest.fixture
def swarm(_swarm_numbers: Iterator[int]) -> str:
    """A swarm name no other test uses, so topics and persistent sessions never collide."""
    return f"test{next(_swarm_numbers)}"
