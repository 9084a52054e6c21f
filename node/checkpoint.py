"""Atomic, checksummed checkpoints of a peer (model, method state, round, sequence numbers).

File layout: ``SPARGOCK`` magic (8 bytes), format version (u32 LE), SHA-256 of the payload
(32 bytes), then the payload: ``torch.save`` of a dict of tensors and plain values, loaded
back with ``weights_only=True`` (no pickle of arbitrary objects). Written to a temporary file,
fsynced, renamed over the old one, and the directory fsynced, so a crash leaves either the
old or the new checkpoint, never half of one. A file that fails the checks raises
``CheckpointError``; it is never loaded silently.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path
from typing import Any

import torch

from spargo.node.errors import CheckpointError

MAGIC = b"SPARGOCK"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sI32s")


def checkpoint_path(directory: str | Path, peer_id: str) -> Path:
    """Where ``peer_id`` keeps its checkpoint inside ``directory``."""
    return Path(directory) / f"{peer_id}.ckpt"


def check_writable_dir(directory: str | Path, what: str) -> Path:
    """Create ``directory`` if needed and prove it writable with a probe file; ConfigError
    (one line naming ``what`` and the path) when it is not a directory or is read-only."""
    from spargo.node.errors import ConfigError

    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".spargo-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{what} {str(path)!r} is not a writable directory: {reason}") from None
    return path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> int:
    """Write ``state`` atomically; returns the number of bytes written."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    blob = _HEADER.pack(MAGIC, FORMAT_VERSION, hashlib.sha256(payload).digest()) + payload
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {exc}") from exc
    _fsync_directory(path.parent)
    return len(blob)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint; raises ``CheckpointError`` when it is corrupt."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"could not read checkpoint {path}: {exc}") from exc
    if len(blob) < _HEADER.size:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(blob)} bytes)")
    magic, version, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{path} is not a spargo checkpoint (bad magic)")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {version}; expected {FORMAT_VERSION}")
    payload = blob[_HEADER.size :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt (checksum mismatch); delete it to start fresh"
        )
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # any unpickling failure means the file is unusable
        raise CheckpointError(f"checkpoint {path} could not be decoded: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict")
    return state


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
