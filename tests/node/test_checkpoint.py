"""Checkpoints are atomic and checksummed; a corrupt one is reported, never loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spargo.node.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from spargo.node.errors import CheckpointError


def test_round_trip(tmp_path: Path) -> None:
    state = {"round": 7, "seq": 42, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "x": [1, 2]}
    path = checkpoint_path(tmp_path, "peer-1")
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["round"] == 7
    assert loaded["seq"] == 42
    assert loaded["x"] == [1, 2]
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["peer-1.ckpt"]  # no temp file left


def test_overwrite_keeps_latest(tmp_path: Path) -> None:
    path = tmp_path / "p.ckpt"
    save_checkpoint(path, {"round": 1})
    save_checkpoint(path, {"round": 2})
    assert load_checkpoint(path)["round"] == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "empty"])
def test_corruption_is_detected(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "p.ckpt"
    save_checkpoint(path, {"round": 3, "w": torch.ones(100)})
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-10] ^= 0x40
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "magic":
        blob[0:8] = b"NOTSPARG"
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="could not read"):
        load_checkpoint(tmp_path / "nope.ckpt")
