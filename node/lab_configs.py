"""The per-peer TOML files ``spargo lab`` writes: the simulator's settings, each peer's
transport table, and (unless insecure) its identity files and broker password."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.node.lab_security import secure_tables

if TYPE_CHECKING:
    from spargo.node.keys import SwarmSecrets
    from spargo.node.lab import LabConfig


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml(tables: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        for key, value in table.items():
            if not isinstance(value, dict) and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, sub in nested.items():
            lines.append(f"[{name}.{key}]")
            lines.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in sub.items())
        lines.append("")
    return "\n".join(lines)


def _mqtt_table(ids: list[str], index: int, broker_url: str | None, ports: list[int]) -> Any:
    return {"kind": "mqtt", "url": broker_url}


def _tcp_table(ids: list[str], index: int, broker_url: str | None, ports: list[int]) -> Any:
    return {
        "kind": "tcp",
        "host": "127.0.0.1",
        "port": ports[index],
        "peers": {p: f"127.0.0.1:{port}" for p, port in zip(ids, ports, strict=True)},
    }


#: The ``[transport]`` table of peer ``index`` for each registry kind the lab can run on one
#: host (an MQTT lab gets a broker, a TCP lab a free port per peer; see ``run_lab``).
LAB_TRANSPORTS = {"mqtt": _mqtt_table, "tcp": _tcp_table}


def write_peer_configs(
    lab: LabConfig,
    broker_url: str | None,
    tcp_ports: list[int],
    made: SwarmSecrets | None = None,
) -> list[Path]:
    """One TOML per peer under ``lab.workdir``; returns their paths. ``made``: the run's
    secrets (None: an insecure lab)."""
    lab.workdir.mkdir(parents=True, exist_ok=True)
    ids = lab.peer_ids()
    paths = []
    for index, peer_id in enumerate(ids):
        transport = LAB_TRANSPORTS[lab.transport](ids, index, broker_url, tcp_ports)
        identity, extra = secure_tables(lab.security, lab.transport, lab.broker, peer_id, made)
        transport.update(extra)
        text = _toml(
            {
                "node": {
                    "peer_id": peer_id,
                    "swarm": lab.swarm,
                    "method": lab.method,
                    "rounds": lab.rounds,
                    "local_steps": lab.local_steps,
                    "batch_size": lab.batch_size,
                    "lr": lab.lr,
                    "momentum": lab.momentum,
                    "seed": index,
                    "round_deadline_s": lab.round_deadline_s,
                    "checkpoint_dir": str(lab.workdir / "state"),
                    "method_options": dict(lab.method_options),
                },
                "transport": transport,
                "topology": {
                    "graph": lab.topology,
                    "peers": ids,
                    "seed": lab.seed,
                    "sampler": lab.sampler,
                },
                "task": {"name": lab.task, "partition": lab.partition},
                "metrics": {"path": str(lab.workdir / f"{peer_id}.metrics.jsonl")},
                **({"identity": identity} if identity else {}),
            }
        )
        path = lab.workdir / f"{peer_id}.toml"
        path.write_text(text)
        if made is not None:
            path.chmod(0o600)  # it holds the peer's broker password
        tomllib.loads(text)  # what we wrote must read back
        paths.append(path)
    return paths
