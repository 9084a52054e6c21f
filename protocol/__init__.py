"""spargo's wire protocol, sans-IO: messages, codecs, authentication and validation.

Bytes in, typed values out; no sockets, no asyncio, no torch. The byte-level format is
specified in PROTOCOL.md at the repository root.

    frame = encode(Envelope(swarm, sender, seq, round, body, boot), keyring, signer)
    envelope = Decoder(swarm, Limits(), keyring, roster).decode(frame)  # or RemoteProtocolError
"""

from spargo.protocol.chunks import CHUNK_HEADER_BYTES, Reassembler, split
from spargo.protocol.envelope import TAG_BYTES, Decoder, Envelope, encode, model_signature
from spargo.protocol.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from spargo.protocol.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Roster, Signer
from spargo.protocol.limits import Keyring, Limits
from spargo.protocol.masks import MaskMethod, mask_bound_nbytes
from spargo.protocol.messages import (
    PROTOCOL_VERSION,
    Bye,
    Delta,
    FullModel,
    Hello,
    MaskedTensor,
    MaskedUpdate,
    Message,
    NamedTensor,
    PushSumShare,
    ResyncRequest,
    RunningSums,
    SparseTensor,
    StreamCopy,
    Thresholds,
    UnitMaskedTensor,
)
from spargo.protocol.values import EXACT_DTYPE, INT8_BLOCK, WIRE_DTYPES, as_decoded

__all__ = [
    "CHUNK_HEADER_BYTES",
    "EXACT_DTYPE",
    "INT8_BLOCK",
    "PROTOCOL_VERSION",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "WIRE_DTYPES",
    "Bye",
    "Decoder",
    "Delta",
    "Envelope",
    "FullModel",
    "Hello",
    "Keyring",
    "Limits",
    "LocalProtocolError",
    "MaskMethod",
    "MaskedTensor",
    "MaskedUpdate",
    "Message",
    "NamedTensor",
    "ProtocolError",
    "PushSumShare",
    "Reason",
    "Reassembler",
    "RemoteProtocolError",
    "ResyncRequest",
    "Roster",
    "RunningSums",
    "Signer",
    "SparseTensor",
    "StreamCopy",
    "Thresholds",
    "UnitMaskedTensor",
    "as_decoded",
    "encode",
    "mask_bound_nbytes",
    "model_signature",
    "split",
]
