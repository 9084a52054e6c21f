"""Chunking: split then reassemble gives the frame back; bad chunks and limits are rejected."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo.protocol import (
    CHUNK_HEADER_BYTES,
    LocalProtocolError,
    Reason,
    Reassembler,
    RemoteProtocolError,
    split,
)


@settings(max_examples=60, deadline=None)
@given(
    nbytes=st.integers(0, 3000),
    chunk_bytes=st.integers(CHUNK_HEADER_BYTES + 1, 500),
    seed=st.randoms(),
)
def test_any_order_reassembles(nbytes: int, chunk_bytes: int, seed: object) -> None:
    data = os.urandom(nbytes)
    chunks = split(data, chunk_bytes, message_id=9)
    assert all(len(c) <= chunk_bytes for c in chunks)
    seed.shuffle(chunks)  # type: ignore[attr-defined]
    if len(chunks) > 1:
        chunks.insert(1, chunks[0])  # a duplicate before completion, as at-least-once gives
    r = Reassembler()
    results = [r.feed("a", c, now_s=0.0) for c in chunks]
    assert [x for x in results if x is not None] == [data]
    assert r.bytes_in_flight("a") == 0


def test_small_frame_is_one_chunk() -> None:
    (chunk,) = split(b"hello", 1024, message_id=1)
    assert len(chunk) == CHUNK_HEADER_BYTES + 5
    assert Reassembler().feed("a", chunk, 0.0) == b"hello"


def test_interleaved_senders_and_messages() -> None:
    a, b = os.urandom(1000), os.urandom(1000)
    r = Reassembler()
    out = []
    for ca, cb in zip(split(a, 100, 1), split(b, 100, 1)):
        out += [r.feed("x", ca, 0.0), r.feed("y", cb, 0.0)]
    assert [o for o in out if o is not None] == [a, b]


def reason(r: Reassembler, chunk: bytes, sender: str = "a", now_s: float = 0.0) -> Reason:
    with pytest.raises(RemoteProtocolError) as info:
        r.feed(sender, chunk, now_s)
    return info.value.reason


def test_bad_chunks() -> None:
    chunks = split(os.urandom(500), 100, 1)
    r = Reassembler()
    assert reason(r, b"SC") is Reason.CHUNK
    assert reason(r, b"XX" + chunks[0][2:]) is Reason.CHUNK
    r.feed("a", chunks[0], 0.0)
    assert reason(r, chunks[0][:-1] + b"\x00") is Reason.CHUNK  # same index, other bytes
    other_total = split(os.urandom(600), 100, 1)[1]
    r.feed("a", chunks[0], 0.0)
    assert reason(r, other_total) is Reason.CHUNK
    assert reason(Reassembler(max_message_bytes=400), chunks[0]) is Reason.OVERSIZED


def test_limits_on_bytes_messages_and_age() -> None:
    r = Reassembler(max_bytes_in_flight_per_sender=250, max_age_s=10.0)
    chunks = split(os.urandom(1000), 100, 1)
    r.feed("a", chunks[0], 0.0)
    r.feed("a", chunks[1], 0.0)
    r.feed("a", chunks[2], 0.0)
    assert reason(r, chunks[3]) is Reason.OVERSIZED
    assert r.bytes_in_flight("a") == 0  # the offending frame was dropped
    r.feed("b", chunks[0], 0.0)
    assert r.expire(5.0) == 0
    assert r.bytes_in_flight("b") > 0
    assert r.expire(11.0) == 1
    assert r.bytes_in_flight("b") == 0
    few = Reassembler(max_messages_in_flight_per_sender=2)
    few.vouch("a")
    few.feed("a", split(b"x" * 50, 40, 1)[0], 0.0)
    few.feed("a", split(b"x" * 50, 40, 2)[0], 0.0)
    assert reason(few, split(b"x" * 50, 40, 3)[0]) is Reason.OVERSIZED


def test_invented_senders_share_one_small_budget() -> None:
    """16 invented ids each start a large frame: together they hold at most the strangers'
    budget, and a vouched-for sender still reassembles its frames."""
    r = Reassembler(max_message_bytes=10_000, max_stranger_bytes=2_000)
    for i in range(16):
        first = split(os.urandom(5_000), 1_000, i)[0]
        with contextlib.suppress(RemoteProtocolError):
            r.feed(f"ghost-{i}", first, 0.0)
    assert r.total_bytes_in_flight <= 2_000
    ghost = split(os.urandom(5_000), 1_000, 99)
    assert r.bytes_in_flight("ghost-0") > 0
    held = r.bytes_in_flight("ghost-0")
    assert r.feed("ghost-0", ghost[0], 0.0) is None  # its new frame replaces the old one:
    assert r.bytes_in_flight("ghost-0") == held  # still one partial frame per stranger
    assert reason(r, ghost[0], "ghost-16") is Reason.OVERSIZED  # the shared budget is spent
    r.vouch("friend")
    data = os.urandom(5_000)
    out = None
    for chunk in split(data, 1_000, 7):
        out = r.feed("friend", chunk, 0.0)
    assert out == data
    assert r.expire(1_000.0) >= 1  # the ghosts' partial frames expire
    assert r.total_bytes_in_flight == 0


def test_bytes_from_all_senders_are_bounded() -> None:
    r = Reassembler(max_message_bytes=10_000, max_bytes_in_flight_total=3_000)
    for name in ("a", "b", "c", "d"):
        r.vouch(name)
    for i, name in enumerate(("a", "b", "c", "d")):
        with contextlib.suppress(RemoteProtocolError):
            r.feed(name, split(os.urandom(5_000), 1_000, i)[0], 0.0)
            r.feed(name, split(os.urandom(5_000), 1_000, i)[1], 0.0)
        assert r.total_bytes_in_flight <= 3_000
    single = split(b"small", 100, 50)[0]
    assert r.feed("e", single, 0.0) == b"small"  # a one-chunk frame is never held


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_random_chunks_only_raise_remote_errors(chunk: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        Reassembler(max_message_bytes=2**20).feed("a", b"SC\x01\x00" + chunk, 0.0)


def test_split_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        split(b"x", CHUNK_HEADER_BYTES, 1)
    with pytest.raises(LocalProtocolError):
        split(b"x", 100, -1)
