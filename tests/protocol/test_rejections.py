"""Each kind of bad frame is rejected with its own Reason, and rejections change no state."""

from __future__ import annotations

import tracemalloc
from typing import Any

import msgpack
import numpy as np
import pytest

from spargo.protocol import (
    PROTOCOL_VERSION,
    Bye,
    Decoder,
    Envelope,
    FullModel,
    Keyring,
    Limits,
    LocalProtocolError,
    NamedTensor,
    Reason,
    RemoteProtocolError,
    encode,
)
from tests.protocol.helpers import KEYRING, SWARM, envelope, sample_messages


def reason_of(decoder: Decoder, frame: bytes) -> Reason:
    with pytest.raises(RemoteProtocolError) as info:
        decoder.decode(frame)
    return info.value.reason


V = PROTOCOL_VERSION


def raw_frame(*fields: Any) -> bytes:
    """A frame built field by field (no tag), to say things our encoder never would."""
    return msgpack.packb(list(fields), use_bin_type=True)


def dense_body(data: bytes, dtype: str = "float32", shape: tuple[int, ...] = (2,)) -> list[Any]:
    """A FullModel body (type 4)."""
    return [[[0, "w", list(shape), [dtype, data]]]]


def test_tampered_byte_is_unauthenticated() -> None:
    frame = bytearray(encode(envelope(sample_messages()[2]), KEYRING))
    frame[len(frame) // 2] ^= 0x01
    assert reason_of(Decoder(SWARM, keyring=KEYRING), bytes(frame)) is Reason.UNAUTHENTICATED


def test_wrong_key_missing_tag_and_unknown_key_id() -> None:
    frame = encode(envelope(Bye()), Keyring({7: b"another key, 32 bytes long......"}, 7))
    assert reason_of(Decoder(SWARM, keyring=KEYRING), frame) is Reason.UNAUTHENTICATED
    untagged = encode(envelope(Bye()))
    assert reason_of(Decoder(SWARM, keyring=KEYRING), untagged) is Reason.UNAUTHENTICATED
    other_id = encode(envelope(Bye()), Keyring({8: bytes(32)}, 8))
    assert reason_of(Decoder(SWARM, keyring=KEYRING), other_id) is Reason.UNKNOWN_KEY


def test_key_rotation_accepts_both_keys_during_overlap() -> None:
    rotated = Keyring({7: KEYRING.keys[7], 8: bytes(range(1, 33))}, active_key_id=8)
    decoder = Decoder(SWARM, keyring=rotated)
    decoder.decode(encode(envelope(Bye(), seq=1), KEYRING))
    decoder.decode(encode(envelope(Bye(), seq=2), rotated))


def test_replay_window() -> None:
    decoder = Decoder(SWARM, Limits(replay_window=8))
    frames = {seq: encode(envelope(Bye(), seq=seq)) for seq in range(30)}
    decoder.decode(frames[10])
    assert reason_of(decoder, frames[10]) is Reason.REPLAY
    decoder.decode(frames[5])  # late but inside the window: accepted once
    assert reason_of(decoder, frames[5]) is Reason.REPLAY
    decoder.decode(frames[20])
    assert reason_of(decoder, frames[12]) is Reason.REPLAY  # now older than the window
    decoder.decode(frames[13])
    decoder.forget("peer-1")
    decoder.decode(frames[10])  # a forgotten peer starts afresh
    other = Decoder(SWARM).decode(encode(envelope(Bye(), seq=10, sender="peer-2")))
    assert other.sender == "peer-2"


def test_rejected_frame_does_not_use_up_its_seq() -> None:
    decoder = Decoder(SWARM)
    nan = np.array([1.0, np.nan], dtype=np.float32)
    bad = encode(envelope(FullModel((NamedTensor("w", nan),)), seq=3))
    assert reason_of(decoder, bad) is Reason.NONFINITE
    decoder.decode(encode(envelope(Bye(), seq=3)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_and_weights(value: float) -> None:
    x = np.array([0.0, value], dtype=np.float32)
    for dtype in ("float32", "float16", "bfloat16", "int8"):
        frame = encode(envelope(FullModel((NamedTensor("w", x, dtype),))))
        assert reason_of(Decoder(SWARM), frame) is Reason.NONFINITE, dtype
    allowed = Decoder(SWARM, Limits(allow_nonfinite=True)).decode(
        encode(envelope(FullModel((NamedTensor("w", x),))))
    )
    assert not np.isfinite(allowed.body.tensors[0].array).all()  # type: ignore[union-attr]
    for code in (8, 9):  # PushSumShare, RunningSums: the mass
        frame = raw_frame(V, None, False, SWARM, "p", 0, 1, 0, code, [value, []])
        assert reason_of(Decoder(SWARM), frame) is Reason.NONFINITE


def test_oversized_message_tensor_and_counts() -> None:
    frame = encode(envelope(FullModel((NamedTensor("w", np.zeros(1000)),))))
    assert reason_of(Decoder(SWARM, Limits(max_message_bytes=1000)), frame) is Reason.OVERSIZED
    assert reason_of(Decoder(SWARM, Limits(max_tensor_elements=999)), frame) is Reason.OVERSIZED
    two = encode(
        envelope(FullModel((NamedTensor("a", np.zeros(3)), NamedTensor("b", np.zeros(3)))))
    )
    assert reason_of(Decoder(SWARM, Limits(max_tensors=1)), two) is Reason.OVERSIZED
    assert reason_of(Decoder(SWARM, Limits(max_total_elements=5)), two) is Reason.OVERSIZED


def test_huge_claims_are_refused_before_allocating() -> None:
    claims = [
        raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, dense_body(b"", shape=(2**31, 2**31))),
        raw_frame(
            V,
            None,
            False,
            SWARM,
            "p",
            0,
            1,
            0,
            3,
            [[[1, "w", [2**31], [3, 0, b"\x05"], ["float32", b""]]]],
        ),
        raw_frame(
            V,
            None,
            False,
            SWARM,
            "p",
            0,
            1,
            0,
            5,
            [0, [[4, "w", [10], 1, 2**40, ["float32", b""]]]],
        ),
    ]
    tracemalloc.start()
    try:
        for frame in claims:
            assert reason_of(Decoder(SWARM), frame) in {Reason.OVERSIZED, Reason.SHAPE}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_version_swarm_type_dtype_and_shape() -> None:
    decoder = Decoder(SWARM)
    assert (
        reason_of(decoder, raw_frame(V + 1, None, False, SWARM, "p", 0, 1, 0, 7, [""]))
        is Reason.VERSION
    )
    assert reason_of(decoder, raw_frame(V + 1)) is Reason.VERSION  # any layout, if it is new
    assert (
        reason_of(decoder, raw_frame(1, None, False, SWARM, "p", 0, 1, 0, 7, [""]))
        is Reason.VERSION
    )
    assert (
        reason_of(decoder, raw_frame(V, None, False, "other", "p", 0, 1, 0, 7, [""]))
        is Reason.WRONG_SWARM
    )
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 99, []))
        is Reason.UNKNOWN_TYPE
    )
    body = dense_body(b"\x00" * 16, dtype="float64")  # float64 only in RunningSums
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, body)) is Reason.DTYPE
    )
    sums = [1.0, dense_body(b"\x00" * 8)[0]]  # and RunningSums only float64
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 9, sums)) is Reason.DTYPE
    )
    body = dense_body(b"\x00" * 12)
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, body)) is Reason.SHAPE
    )
    thresholds = [["int8", b"\x00", b"\x00" * 4]]
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 2, thresholds))
        is Reason.DTYPE
    )
    out_of_range = [0, [[3, "w", [4], [1, 1, b"\x09"], ["float32", b"\x00" * 4]]]]
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 5, out_of_range))
        is Reason.SHAPE
    )
    wrong_kind = [[[3, "w", [4], [1, 1, b"\x01"], ["float32", b"\x00" * 4]]]]
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, wrong_kind))
        is Reason.MALFORMED
    )
    negative = [-1.0, []]  # a push-sum share carries mass > 0
    assert (
        reason_of(decoder, raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 8, negative))
        is Reason.MALFORMED
    )


def test_garbage_is_malformed() -> None:
    decoder = Decoder(SWARM)
    for frame in [b"", b"\x00", b"\x98", b"\xc1" * 10, msgpack.packb({"a": 1}), b"\x9a\x03\xc0"]:
        assert reason_of(decoder, frame) is Reason.MALFORMED, frame
    assert reason_of(decoder, "not bytes") is Reason.MALFORMED  # type: ignore[arg-type]


def test_step_field_is_optional_and_checked() -> None:
    """The gossip step (PROTOCOL.md §2) is an eleventh field only when > 0: step 0 encodes
    as a 10-field frame, a written step must lie in 1..255, and a twelfth field is refused."""
    body = dense_body(b"\x00" * 8)
    plain = encode(envelope(FullModel((NamedTensor("w", np.zeros(2)),))))
    assert plain[0] == 0x9A  # fixarray of 10: step 0 is not written
    decoded = Decoder(SWARM).decode(raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, body, 3))
    assert decoded.step == 3
    for bad in (0, 256, -1, True, 1.0, "1"):
        frame = raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, body, bad)
        assert reason_of(Decoder(SWARM), frame) is Reason.MALFORMED, bad
    twelve = raw_frame(V, None, False, SWARM, "p", 0, 1, 0, 4, body, 1, 1)
    assert reason_of(Decoder(SWARM), twelve) is Reason.MALFORMED
    with pytest.raises(LocalProtocolError):
        Envelope(SWARM, "p", 1, 0, Bye(), step=256)


def test_step_survives_a_signed_tagged_round_trip() -> None:
    from spargo.protocol import Roster, Signer

    signer = Signer(bytes(range(32)))
    env = Envelope(SWARM, "p", 5, 2, Bye(), step=7)
    frame = encode(env, KEYRING, signer)
    roster = Roster({"p": signer.public_key})
    got = Decoder(SWARM, keyring=KEYRING, roster=roster).decode(frame)
    assert (got.round, got.step, got.seq) == (2, 7, 5)
