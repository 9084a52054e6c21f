"""Every message survives encode → decode, with and without a keyring."""

from __future__ import annotations

import numpy as np
import pytest

from spargo.protocol import Decoder, FullModel, Keyring, NamedTensor, encode
from tests.protocol.helpers import KEYRING, SWARM, assert_same, envelope, sample_messages


@pytest.mark.parametrize("keyring", [None, KEYRING], ids=["plain", "tagged"])
@pytest.mark.parametrize("index", range(len(sample_messages())))
def test_every_message_round_trips(index: int, keyring: Keyring | None) -> None:
    sent = envelope(sample_messages()[index], seq=index)
    got = Decoder(SWARM, keyring=keyring).decode(encode(sent, keyring))
    # fp16/int8 values are lossy: compare with what the sender's encoding would give
    assert type(got.body) is type(sent.body)
    assert (got.swarm, got.sender, got.seq, got.round) == (sent.swarm, sent.sender, sent.seq, 5)
    again = Decoder(SWARM, keyring=keyring).decode(encode(got, keyring))
    assert_same(got, again)


def test_float32_dense_is_exact_and_keeps_shape() -> None:
    x = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    got = Decoder(SWARM).decode(encode(envelope(FullModel((NamedTensor("x", x),)))))
    tensor = got.body.tensors[0]  # type: ignore[union-attr]
    assert tensor.array.shape == (3, 4, 5)
    assert tensor.array.dtype == np.float32
    np.testing.assert_array_equal(tensor.array, x)
