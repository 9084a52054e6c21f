"""Benchmark of protocol's codecs: mask size against the entropy bound, message sizes, speed.

For n parameters (default 10⁶) at densities 0.1, 1, 10, 50 % (and 90 %, the complement case):
the mask's bytes over log2 C(n, k)/8, the frame size of a MaskedUpdate with fp32/fp16/int8
values, and encode/decode throughput in MB/s of raw fp32 payload (n·4 bytes for dense, k·4
for masked). The cost of authentication per message (``bench: auth``): encode and decode time
and bytes of a frame untagged, with the swarm's HMAC tag, and with the tag and the sender's
Ed25519 signature (PROTOCOL.md §2), for a tiny message and models of 10⁴ and 10⁶ floats.
Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from spargo.protocol import (
    Bye,
    Decoder,
    Envelope,
    FullModel,
    Keyring,
    MaskedTensor,
    MaskedUpdate,
    MaskMethod,
    NamedTensor,
    Roster,
    Signer,
    encode,
    mask_bound_nbytes,
)
from spargo.protocol.masks import decode_mask, encode_mask


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def roundtrip_mbps(
    env: Envelope, keyring: Keyring | None, payload_nbytes: int, repeats: int
) -> dict[str, float]:
    frame = encode(env, keyring)
    enc = best_seconds(lambda: encode(env, keyring), repeats)
    dec = best_seconds(lambda: Decoder("bench", keyring=keyring).decode(frame), repeats)
    mb = payload_nbytes / 1e6
    return {
        "encode_MBps": round(mb / enc, 1),
        "decode_MBps": round(mb / dec, 1),
        "roundtrip_MBps": round(mb / (enc + dec), 1),
    }


def mask_rows(n: int, densities: list[float], repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for density in densities:
        mask = rng.random(n) < density
        k = int(mask.sum())
        method, _, payload = encode_mask(mask)
        bound = mask_bound_nbytes(n, k)
        values = rng.standard_normal(k).astype(np.float32)
        sizes = {}
        for dtype in ("float32", "float16", "int8"):
            body = MaskedUpdate((MaskedTensor("w", (n,), mask, values, dtype),))
            sizes[f"frame_bytes_{dtype}"] = len(encode(Envelope("bench", "p", 1, 0, body)))
        env = Envelope("bench", "p", 1, 0, MaskedUpdate((MaskedTensor("w", (n,), mask, values),)))
        row = {
            "bench": "mask",
            "n": n,
            "density": density,
            "k": k,
            "method": MaskMethod(method).name.lower(),
            "mask_bytes": len(payload),
            "bound_bytes": round(bound, 1),
            "mask_over_bound": round(len(payload) / bound, 4),
            "mask_encode_ms": round(1e3 * best_seconds(lambda m=mask: encode_mask(m), repeats), 2),
            "mask_decode_ms": round(
                1e3 * best_seconds(lambda w=[method, k, payload]: decode_mask(w, n), repeats), 2
            ),
            **sizes,
            **roundtrip_mbps(env, None, 4 * k, repeats),
        }
        print(json.dumps(row), flush=True)


def dense_rows(n: int, repeats: int, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    keyring = Keyring({1: bytes(32)}, 1)
    for dtype in ("float32", "float16", "bfloat16", "int8"):
        env = Envelope("bench", "p", 1, 0, FullModel((NamedTensor("w", x, dtype),)))
        for auth in (False, True):
            row = {
                "bench": "dense",
                "n": n,
                "wire_dtype": dtype,
                "hmac": auth,
                "frame_bytes": len(encode(env, keyring if auth else None)),
                **roundtrip_mbps(env, keyring if auth else None, 4 * n, repeats),
            }
            print(json.dumps(row), flush=True)


def auth_rows(repeats: int, seed: int) -> None:
    """What a tag and a signature add to one message, by message size."""
    rng = np.random.default_rng(seed)
    keyring = Keyring({1: bytes(range(32))}, 1)
    signer = Signer(bytes(range(32, 64)))
    roster = Roster({"p": signer.public_key})
    bodies = {"bye": Bye("x")}
    for n in (10_000, 1_000_000):
        bodies[f"dense_{n}"] = FullModel((NamedTensor("w", rng.standard_normal(n)),))
    modes: dict[str, tuple[Keyring | None, Signer | None, Roster | None]] = {
        "none": (None, None, None),
        "hmac": (keyring, None, None),
        "hmac+ed25519": (keyring, signer, roster),
    }
    for name, body in bodies.items():
        env = Envelope("bench", "p", 1, 0, body, boot=2**63)
        for mode, (ring, sig, ros) in modes.items():
            frame = encode(env, ring, sig)

            def decode(f: bytes = frame, r: Keyring | None = ring, o: Roster | None = ros) -> None:
                Decoder("bench", keyring=r, roster=o).decode(f)

            row = {
                "bench": "auth",
                "message": name,
                "auth": mode,
                "frame_bytes": len(frame),
                "encode_us": round(
                    1e6 * best_seconds(lambda e=env, r=ring, s=sig: encode(e, r, s), repeats), 1
                ),
                "decode_us": round(1e6 * best_seconds(decode, repeats), 1),
            }
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="parameters per tensor")
    parser.add_argument("--densities", type=float, nargs="+", default=[0.001, 0.01, 0.1, 0.5, 0.9])
    parser.add_argument("--repeats", type=int, default=7, help="timing runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mask_rows(args.n, args.densities, args.repeats, args.seed)
    dense_rows(args.n, args.repeats, args.seed)
    auth_rows(args.repeats, args.seed)


if __name__ == "__main__":
    main()
