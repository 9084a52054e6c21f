"""Per-peer signatures, announcements, incarnations and sequence jumps (PROTOCOL.md §2, §8)."""

from __future__ import annotations

import pytest

from spargo.protocol import (
    Bye,
    Decoder,
    Envelope,
    Hello,
    Limits,
    Reason,
    RemoteProtocolError,
    Roster,
    Signer,
    encode,
)
from tests.protocol.helpers import KEYRING, SWARM

ALICE, BOB = Signer.generate(), Signer.generate()


def frame(
    sender: str, seq: int, signer: Signer | None, *, boot: int = 1, body: object = None
) -> bytes:
    message = body if body is not None else Bye("x")
    return encode(Envelope(SWARM, sender, seq, 0, message, boot), KEYRING, signer)  # type: ignore[arg-type]


def reason(decoder: Decoder, data: bytes) -> Reason:
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.decode(data)
    return caught.value.reason


def roster_decoder(**limits: int) -> Decoder:
    roster = Roster({"alice": ALICE.public_key, "bob": BOB.public_key})
    return Decoder(SWARM, Limits(**limits), KEYRING, roster)


def test_a_key_holder_cannot_speak_for_another_peer() -> None:
    decoder = roster_decoder()
    assert decoder.decode(frame("alice", 1, ALICE)).sender == "alice"
    assert reason(decoder, frame("alice", 2, BOB)) is Reason.SIGNATURE  # bob claims alice
    assert reason(decoder, frame("alice", 3, None)) is Reason.SIGNATURE  # unsigned
    assert reason(decoder, frame("mallory", 1, Signer.generate())) is Reason.SIGNATURE
    # a rejected frame used up nothing: alice's real seq 2 is still fresh
    assert decoder.decode(frame("alice", 2, ALICE)).seq == 2


def test_tampering_after_signing_is_caught_by_the_tag_or_the_signature() -> None:
    data = bytearray(frame("alice", 1, ALICE))
    data[12] ^= 1
    assert reason(roster_decoder(), bytes(data)) is Reason.UNAUTHENTICATED
    no_tag = Decoder(SWARM, roster=Roster({"alice": ALICE.public_key}))
    signed = bytearray(encode(Envelope(SWARM, "alice", 1, 0, Bye("x")), None, ALICE))
    signed[-70] ^= 1
    assert reason(no_tag, bytes(signed)) in {Reason.SIGNATURE, Reason.MALFORMED}


def test_announced_keys_are_pinned_once_from_authenticated_hellos() -> None:
    decoder = Decoder(SWARM, keyring=KEYRING, roster=Roster(learn=True))
    carol = Signer.generate()
    assert reason(decoder, frame("carol", 1, carol)) is Reason.SIGNATURE  # no key yet
    hello = Hello("sig", carol.public_key)
    assert decoder.decode(frame("carol", 2, carol, body=hello)).sender == "carol"
    assert decoder.decode(frame("carol", 3, carol)).seq == 3
    thief = Signer.generate()  # a key holder announcing its own key for carol: too late
    stolen = Hello("sig", thief.public_key)
    assert reason(decoder, frame("carol", 4, thief, body=stolen)) is Reason.SIGNATURE
    # an announcement signed by another key than the one it announces is refused
    assert reason(decoder, frame("dave", 1, thief, body=hello)) is Reason.SIGNATURE


def test_announcements_need_the_swarm_key() -> None:
    decoder = Decoder(SWARM, roster=Roster(learn=True))
    carol = Signer.generate()
    data = encode(Envelope(SWARM, "carol", 1, 0, Hello("s", carol.public_key)), None, carol)
    assert reason(decoder, data) is Reason.SIGNATURE


def test_one_frame_cannot_push_the_window_past_the_real_stream() -> None:
    decoder = roster_decoder(max_seq_jump=1000)
    decoder.decode(frame("alice", 10, ALICE))
    assert reason(decoder, frame("alice", 2**64 - 1, ALICE)) is Reason.SEQUENCE
    assert decoder.decode(frame("alice", 11, ALICE)).seq == 11  # the stream goes on


def test_a_restart_with_lower_sequence_numbers_is_a_new_incarnation() -> None:
    decoder = roster_decoder()
    decoder.decode(frame("alice", 10**15, ALICE, boot=7))
    assert reason(decoder, frame("alice", 10**15, ALICE, boot=7)) is Reason.REPLAY
    # the clock went back an hour: lower seqs, but a new boot id
    assert decoder.decode(frame("alice", 10**15 - 3_600_000_000, ALICE, boot=8)).boot == 8
    # the old incarnation's frames are still checked against its own window
    assert reason(decoder, frame("alice", 10**15, ALICE, boot=7)) is Reason.REPLAY


def test_replay_errors_name_the_sender() -> None:
    decoder = roster_decoder()
    data = frame("alice", 1, ALICE)
    decoder.decode(data)
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.decode(data)
    assert caught.value.sender == "alice"


def test_incarnations_per_sender_are_bounded() -> None:
    decoder = roster_decoder(max_boots_per_sender=2)
    for boot in range(5):
        decoder.decode(frame("alice", 5, ALICE, boot=boot))
    assert len(decoder._replay) == 2
