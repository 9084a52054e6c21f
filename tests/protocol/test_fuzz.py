"""Fuzzing: any bytes at all give an Envelope or a RemoteProtocolError, nothing else."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spargo.protocol import Decoder, Limits, RemoteProtocolError, encode
from tests.protocol.helpers import KEYRING, SWARM, envelope, sample_messages

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = Limits(max_message_bytes=2**16, max_tensor_elements=10_000, max_total_elements=20_000)
FRAMES = [encode(envelope(m, seq=i)) for i, m in enumerate(sample_messages())]
TAGGED = [encode(envelope(m, seq=i), KEYRING) for i, m in enumerate(sample_messages())]


def decode_or_reject(frame: bytes, tagged: bool = False) -> None:
    decoder = Decoder(SWARM, SMALL, keyring=KEYRING if tagged else None)
    with contextlib.suppress(RemoteProtocolError):
        decoder.decode(frame)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(frame: bytes) -> None:
    decode_or_reject(frame)
    decode_or_reject(frame, tagged=True)


def test_every_truncation() -> None:
    for frame in FRAMES + TAGGED:
        for cut in range(len(frame)):
            decode_or_reject(frame[:cut])
            decode_or_reject(frame[:cut], tagged=True)


@FUZZ
@given(
    which=st.integers(0, len(FRAMES) - 1),
    flips=st.lists(st.integers(0, 2**20), min_size=1, max_size=4),
)
def test_bit_flips(which: int, flips: list[int]) -> None:
    for frames, tagged in ((FRAMES, False), (TAGGED, True)):
        frame = bytearray(frames[which])
        for bit in flips:
            frame[(bit // 8) % len(frame)] ^= 1 << (bit % 8)
        decode_or_reject(bytes(frame), tagged)


REPLACEMENTS: list[Any] = [
    None, True, 0, -1, 2**32, 2**64 - 1, -(2**63), 1.5, float("nan"), float("inf"),
    "", "x" * 300, "float64", b"", b"\xff" * 9, [], [0], [1, 2, 3], [[0, "w", [2], []]],
]  # fmt: skip


def _nodes(obj: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [path]
    if isinstance(obj, list):
        for i, child in enumerate(obj):
            out += _nodes(child, (*path, i))
    return out


def _replace(obj: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(obj)
    copy[path[0]] = _replace(obj[path[0]], path[1:], new)
    return copy


@FUZZ
@given(data=st.data(), which=st.integers(0, len(FRAMES) - 1))
def test_mutated_valid_messages(data: st.DataObject, which: int) -> None:
    tree = msgpack.unpackb(FRAMES[which], use_list=True)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_nodes(tree)))
        tree = _replace(tree, path, data.draw(st.sampled_from(REPLACEMENTS)))
    decode_or_reject(msgpack.packb(tree, use_bin_type=True))


@FUZZ
@given(
    method=st.integers(0, 5),
    n=st.integers(0, 2000),
    k=st.integers(-1, 2001),
    payload=st.binary(max_size=300),
)
def test_mask_decoder_on_random_payloads(method: int, n: int, k: int, payload: bytes) -> None:
    from spargo.protocol.masks import decode_mask

    try:
        mask, count = decode_mask([method, k, payload], n)
    except RemoteProtocolError:
        return
    assert mask.shape == (n,)
    assert int(mask.sum()) == count == k
