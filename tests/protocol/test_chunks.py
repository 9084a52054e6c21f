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
    few.feed("a", split(b"x" * 50, 40, 1)[0], 0.0)
    few.feed("a", split(b"x" * 50, 40, 2)[0], 0.0)
    assert reason(few, split(b"x" * 50, 40, 3)[0]) is Reason.OVERSIZED


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
