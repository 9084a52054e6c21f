"""The test vectors of PROTOCOL.md: our encoder must produce them and our decoder accept them.

Run `python -m tests.protocol.test_vectors` to print the hex blocks for PROTOCOL.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from spargo.protocol import (
    Bye,
    Decoder,
    Delta,
    Envelope,
    FullModel,
    Hello,
    Keyring,
    MaskedTensor,
    MaskedUpdate,
    MaskMethod,
    NamedTensor,
    PushSumShare,
    ResyncRequest,
    Roster,
    RunningSums,
    Signer,
    SparseTensor,
    StreamCopy,
    Thresholds,
    encode,
)
from tests.protocol.helpers import assert_same

SPEC = Path(__file__).resolve().parents[2] / "PROTOCOL.md"
KEY = Keyring({7: bytes(range(32))}, active_key_id=7)
#: The Ed25519 key of the signed vectors: private key bytes 32 to 63 (sender peer-1).
SIGNER = Signer(bytes(range(32, 64)))
BOOT = 0x0123456789ABCDEF


def _mask(n: int, positions: list[int]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def vectors() -> dict[str, tuple[Envelope, Keyring | None]]:
    """The envelopes behind each vector, and the keyring that tags them (None: untagged).
    The vectors named in ``SIGNED`` are also signed by ``SIGNER``."""
    bitmap = MaskedTensor("w", (2, 4), _mask(8, [1, 2, 7]), np.array([1.0, -2.0, 0.5]))
    rice_positions = [100, 230, 370, 500, 640, 760, 900, 1020]
    rice = MaskedTensor("r", (1024,), _mask(1024, rice_positions), np.arange(8) / 4, "bfloat16")
    dense = NamedTensor("b", np.array([0.25, -0.5]), "float16")
    top = SparseTensor("t", (100,), np.array([1.5, -3.0]), indices=np.array([10, 90]))
    rand = SparseTensor("s", (8, 8), np.array([0.5, -1.0, 0.25]), seed=42, wire_dtype="int8")
    half = np.array([0.25, -0.5])
    exact = np.array([1.0 + 2.0**-40, -3.0])
    return {
        "bye": (Envelope("swarm-a", "peer-1", 1, 5, Bye("done")), KEY),
        "thresholds": (
            Envelope("swarm-a", "peer-1", 2, 5, Thresholds(np.array([0.5, -1.0, 2.0]))),
            KEY,
        ),
        "masked_update": (
            Envelope("swarm-a", "peer-1", 3, 6, MaskedUpdate((bitmap, rice, dense))),
            KEY,
        ),
        "delta": (Envelope("swarm-a", "peer-2", 4, 6, Delta(17, (top, rand))), KEY),
        "resync_untagged": (Envelope("swarm-a", "peer-2", 5, 6, ResyncRequest(16)), None),
        "hello": (Envelope("swarm-a", "peer-1", 6, 0, Hello("0123456789abcdef")), KEY),
        "push_sum_share": (
            Envelope("swarm-a", "peer-1", 7, 6, PushSumShare(0.25, (NamedTensor("b", half),))),
            KEY,
        ),
        "running_sums": (
            Envelope(
                "swarm-a", "peer-1", 8, 6, RunningSums(1.5, (NamedTensor("b", exact, "float64"),))
            ),
            KEY,
        ),
        "stream_copy": (
            Envelope("swarm-a", "peer-2", 9, 6, StreamCopy(17, (NamedTensor("b", half),))),
            KEY,
        ),
        "hello_signed": (
            Envelope(
                "swarm-a", "peer-1", 10, 0, Hello("0123456789abcdef", SIGNER.public_key), BOOT
            ),
            KEY,
        ),
        "bye_signed_untagged": (Envelope("swarm-a", "peer-1", 11, 7, Bye("done"), BOOT), None),
        "full_model_step": (
            Envelope("swarm-a", "peer-1", 12, 6, FullModel((NamedTensor("b", half),)), step=2),
            KEY,
        ),
    }


SIGNED = frozenset({"hello_signed", "bye_signed_untagged"})


def signer_of(name: str) -> Signer | None:
    return SIGNER if name in SIGNED else None


def roster_of(name: str) -> Roster | None:
    return Roster({"peer-1": SIGNER.public_key}) if name in SIGNED else None


def spec_vectors() -> dict[str, str]:
    """Vector name -> hex, parsed from PROTOCOL.md."""
    text = SPEC.read_text(encoding="utf-8")
    found = re.findall(r"#### Vector `(\w+)`.*?```hex\n(.*?)```", text, flags=re.DOTALL)
    return {name: "".join(block.split()) for name, block in found}


def test_spec_lists_every_vector() -> None:
    assert set(spec_vectors()) == set(vectors())


@pytest.mark.parametrize("name", sorted(vectors()))
def test_vector_encodes_and_decodes(name: str) -> None:
    env, keyring = vectors()[name]
    signer, roster = signer_of(name), roster_of(name)
    expected = spec_vectors()[name]
    assert encode(env, keyring, signer).hex() == expected
    got = Decoder("swarm-a", keyring=keyring, roster=roster).decode(bytes.fromhex(expected))
    assert got.boot == env.boot
    assert got.step == env.step
    again = encode(got, keyring, signer)
    assert again.hex() == expected  # lossy dtypes: re-encoding decoded values is stable
    assert_same(Decoder("swarm-a", keyring=keyring, roster=roster_of(name)).decode(again), got)


def test_vectors_cover_the_mask_methods() -> None:
    from spargo.protocol.masks import encode_mask

    env = vectors()["masked_update"][0]
    methods = {encode_mask(t.mask)[0] for t in env.body.tensors if isinstance(t, MaskedTensor)}  # type: ignore[union-attr]
    assert methods == {MaskMethod.BITMAP, MaskMethod.RICE}


if __name__ == "__main__":
    for name, (env, keyring) in vectors().items():
        frame = encode(env, keyring, signer_of(name)).hex()
        print(f"#### Vector `{name}`\n\n```hex")
        print("\n".join(frame[i : i + 64] for i in range(0, len(frame), 64)))
        print("```\n")
