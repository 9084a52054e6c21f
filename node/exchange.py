"""How a peer exchanges payloads: encode and send, receive and decode, file, merge.

The sending and receiving half of ``node.node.Node`` (a mixin over the node's state). Each
frame is decoded once (``protocol.Decoder``), its body checked once against the method's
signature (``node.payload.from_message``) and filed in the inbox; a control payload goes to
``merge`` at once. ``_merge`` is the bad-data guard around ``method.merge``.

Security (README, "Security"): frames are tagged with the swarm key and signed with this
peer's Ed25519 key when it has them (``node.identity.Credentials``), and carry this
process's random boot id, so a restarted peer's lower sequence numbers are a new
incarnation, not replays. With several gossip steps per round every frame also carries its
step (PROTOCOL.md §2): each step's messages have their own sequence numbers, are filed under
(round, step), and one from an earlier step of the current round is stale. Nothing here
changes state for a frame that fails a check: the decoder records sequence numbers only for
valid frames, and a sender's claimed round or Lamport clock moves at most ``round_jump`` per
accepted message. A sender whose frames are dropped as replays for ``REPLAY_WARN_ROUNDS``
rounds is named in a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from spargo.node.config import NodeConfig
from spargo.node.errors import TransportError
from spargo.node.identity import Credentials, new_boot_id
from spargo.node.inbox import Arrival, Inbox
from spargo.node.influence import clipped_senders, distances
from spargo.node.methods.base import Method
from spargo.node.methods.payloads import MergeResult, Payload, Received, is_control
from spargo.node.metrics import Counters
from spargo.node.payload import PayloadMismatch, from_message, signature_hash, to_message
from spargo.node.transports.base import Transport
from spargo.node.view import PeerView
from spargo.protocol import (
    Bye,
    Decoder,
    Envelope,
    Hello,
    Keyring,
    Limits,
    Message,
    RemoteProtocolError,
    Roster,
    Signer,
    encode,
)

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("spargo.node")

#: A sender whose every frame is dropped as a replay for this many of our rounds is warned of.
REPLAY_WARN_ROUNDS = 3
#: How many senders' replay streaks are tracked at once.
MAX_REPLAY_SENDERS = 1024
#: With a signing key, Hello (and its public key) is re-sent to a target this often (rounds),
#: so a neighbour that restarted and forgot a pinned key learns it again.
GREET_EVERY_ROUNDS = 10
#: A sender clipped in this many merges running is named in a warning.
CLIP_WARN_STREAK = 5


@runtime_checkable
class Vouching(Protocol):
    """A transport that holds pre-authentication state per claimed sender (chunks) and can
    be told that a sender is real (``MqttTransport.vouch``)."""

    def vouch(self, peer_id: str) -> None: ...


#: ``filter(round, [(target, payload), ...]) -> [(target, payload), ...]`` (see ``Node``).
OutgoingFilter = Callable[[int, list[tuple[str, Payload]]], list[tuple[str, Payload]]]
#: ``observer(round, received)``, called before every ``method.merge`` (see ``Node``).
MergeObserver = Callable[[int, Sequence[Received]], None]


class PayloadExchange:
    """Sending, receiving and merging for ``Node`` (which sets every attribute below)."""

    config: NodeConfig
    method: Method
    view: PeerView
    transport: Transport
    counters: Counters
    departed: set[str]
    round: int
    #: Rounds mode: the gossip step within the round (0 .. gossip_steps − 1); async: 0.
    step: int
    clock: int
    seq: int
    _keyring: Keyring | None
    _limits: Limits
    _decoder: Decoder
    _signature_hash: str
    _inbox: Inbox
    _arrived: asyncio.Event
    _latest_round: dict[str, int]
    _merge_failed: set[str]
    _outgoing_filter: OutgoingFilter | None
    _merge_observer: MergeObserver | None
    _signer: Signer | None
    _boot: int
    _replays: dict[str, int]
    _greeted: dict[str, int]
    model: nn.Module
    clipped: Counter[str]

    def _init_exchange(self, limits: Limits, credentials: Credentials | None = None) -> None:
        """Set up the exchange's own state (the node calls this once, after ``config``,
        ``method`` and friends are set)."""
        credentials = credentials or Credentials()
        self._keyring = keyring_of(self.config)
        self._limits = limits
        self._signer = credentials.signer
        roster: Roster | None = credentials.roster
        self._boot = new_boot_id() if credentials.boot_id is None else credentials.boot_id
        self._decoder = Decoder(self.config.swarm, limits, self._keyring, roster)
        #: How far one accepted message may move a sender's known round or our Lamport clock.
        self.round_jump = 2 * (self.config.max_staleness + 1)
        #: sender -> our round when its frames started being dropped as replays (reset by a
        #: good frame); -1 once warned about.
        self._replays = {}
        #: target -> the round we last sent it our Hello (only with a signing key).
        self._greeted = {}
        #: Per sender: merges in which self-centred clipping cut its update short.
        self.clipped = Counter()
        self._clip_streak: Counter[str] = Counter()
        self._signature_hash = signature_hash(self.method.signature())
        self._inbox = Inbox()
        self._arrived = asyncio.Event()
        #: The latest round each peer has sent us (how far ahead the others are).
        self._latest_round = {}
        #: Senders whose payload made ``merge`` raise (each is logged with a traceback once).
        self._merge_failed = set()

    def _outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        """What the method sends this round, through the outgoing filter when there is one."""
        payloads = list(self.method.outgoing(round_index, targets))
        if self._outgoing_filter is not None:
            payloads = self._outgoing_filter(round_index, payloads)
        return payloads

    def _merge(self, round_index: int, received: list[Received]) -> MergeResult:
        """``method.merge`` inside the bad-data guard: an exception (a payload the method
        could not digest) is counted as ``merge_error`` per payload, logged once per sender
        with its traceback, and the peer goes on with the model as the method left it."""
        try:
            if self._merge_observer is not None:
                self._merge_observer(round_index, received)
            pulls = self._pulls(received)
            result = self.method.merge(round_index, received)
            if pulls and result.stats.clip_radius is not None:
                self._count_clipped(round_index, pulls, result.stats.clip_radius)
            return result
        except Exception:  # a task boundary: a bad payload must never stop the peer
            senders = sorted({item.sender for item in received})
            self.counters.drop("merge_error", max(1, len(received)))
            new = [s for s in senders if s not in self._merge_failed]
            self._merge_failed.update(senders)
            level = logging.WARNING if new or not senders else logging.DEBUG
            log.log(
                level,
                "%s: merge of round %d failed on payloads from %s",
                self.config.peer_id,
                round_index,
                ", ".join(senders) or "nobody",
                exc_info=level == logging.WARNING,
            )
            return MergeResult()

    def _pulls(self, received: Sequence[Received]) -> dict[str, float]:
        """With ``robust = "clip"``: how far each full model received is from ours."""
        if self.config.method_options.get("robust") != "clip" or not received:
            return {}
        own = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        return distances(own, received)

    def _count_clipped(self, round_index: int, pulls: dict[str, float], radius: float) -> None:
        """Count clipped updates per sender; warn when one sender is clipped in
        ``CLIP_WARN_STREAK`` merges running (the farthest honest neighbour is clipped now and
        then: the radius is the median distance), and every 100 clips after."""
        clipped = clipped_senders(pulls, radius)
        for sender in pulls:
            self._clip_streak[sender] = self._clip_streak[sender] + 1 if sender in clipped else 0
        for sender in clipped:
            self.clipped[sender] += 1
            streak = self._clip_streak[sender]
            if streak == CLIP_WARN_STREAK or (streak > CLIP_WARN_STREAK and streak % 100 == 0):
                log.warning(
                    "%s: round %d: clipped the update of %s in %d merges running "
                    "(%.3g from us, radius %.3g)",
                    self.config.peer_id,
                    round_index,
                    sender,
                    streak,
                    pulls[sender],
                    radius,
                )

    def _saw_round(self, sender: str, round_index: int) -> None:
        """Record an accepted message's round: at most ``round_jump`` past what we knew of the
        sender (or our own round), so no single message drags the catch-up far."""
        known = max(self._latest_round.get(sender, -1), self.round)
        bounded = min(round_index, known + self.round_jump)
        self._latest_round[sender] = max(self._latest_round.get(sender, -1), bounded)

    def _hello(self) -> Hello:
        public_key = self._signer.public_key if self._signer is not None else None
        return Hello(model_signature=self._signature_hash, public_key=public_key)

    async def _send_hello(self) -> None:
        hello = self._hello()
        self._greeted.update(dict.fromkeys(self.view.neighbours, self.round))
        await self._send_all([(peer, hello) for peer in self.view.neighbours], self.round)

    def _greetings(self, peers: Sequence[str], round_index: int) -> list[tuple[str, Message]]:
        """Hellos owed to ``peers`` (with a signing key: first contact, then every
        ``GREET_EVERY_ROUNDS``), so a peer learns our key before our first payload."""
        if self._signer is None:
            return []
        due = [
            p
            for p in dict.fromkeys(peers)
            if round_index - self._greeted.get(p, -GREET_EVERY_ROUNDS) >= GREET_EVERY_ROUNDS
        ]
        self._greeted.update(dict.fromkeys(due, round_index))
        hello = self._hello()
        return [(p, hello) for p in due]

    async def _send_payloads(
        self, payloads: Sequence[tuple[str, Payload]], round_index: int
    ) -> None:
        """Map each distinct payload to its message once (``node.payload``), then send."""
        messages: dict[int, Message] = {}
        out = self._greetings([peer for peer, _ in payloads], round_index)
        for peer, payload in payloads:
            message = messages.get(id(payload))
            if message is None:
                message = messages[id(payload)] = to_message(payload)
            out.append((peer, message))
        await self._send_all(out, round_index)

    async def _send_all(self, messages: list[tuple[str, Message]], round_index: int) -> None:
        """Encode each distinct body once (one sequence number) and send it to its peers."""
        encoded: dict[int, bytes] = {}
        for peer, body in messages:
            if peer in self.departed and not isinstance(body, Bye):
                continue
            data = encoded.get(id(body))
            if data is None:
                self.seq += 1
                envelope = Envelope(
                    swarm=self.config.swarm,
                    sender=self.config.peer_id,
                    seq=self.seq,
                    round=round_index,
                    body=body,
                    boot=self._boot,
                    step=self.step,
                )
                data = encoded[id(body)] = encode(envelope, self._keyring, self._signer)
            try:
                await self.transport.send(peer, data)
            except TransportError as exc:
                self.counters.send_failures += 1
                log.debug("%s: send to %s failed: %s", self.config.peer_id, peer, exc)
                continue
            self.counters.messages_sent += 1
            self.counters.bytes_sent += len(data)

    async def _receive_loop(self) -> None:
        async for sender, data in self.transport.incoming():
            self.counters.messages_received += 1
            self.counters.bytes_received += len(data)
            try:
                envelope = self._decoder.decode(data)
            except RemoteProtocolError as exc:
                self.counters.drop(str(exc.reason))
                if exc.sender is not None and exc.sender == sender:
                    self._note_replay(exc.sender)
                continue
            if envelope.sender != sender:
                self.counters.drop("sender_mismatch")
                continue
            self._authenticated(sender)
            try:
                await self._accept(envelope)
            except Exception:  # a task boundary: a bad message must never kill the peer
                log.exception(
                    "%s: message from %s could not be handled", self.config.peer_id, sender
                )
                self.counters.drop("handler_error")

    def _authenticated(self, sender: str) -> None:
        """A frame from ``sender`` passed every check of the decoder."""
        self._replays.pop(sender, None)
        if isinstance(self.transport, Vouching):
            self.transport.vouch(sender)

    def _note_replay(self, sender: str) -> None:
        """Count rounds of replay drops from ``sender``; warn once when they go on."""
        if sender not in self._replays and len(self._replays) >= MAX_REPLAY_SENDERS:
            return  # bounded, whatever an open swarm's senders claim to be
        started = self._replays.setdefault(sender, self.round)
        if started >= 0 and self.round - started >= REPLAY_WARN_ROUNDS:
            self._replays[sender] = -1
            log.warning(
                "%s: every message from %s has been dropped as a replay or sequence jump for "
                "%d rounds (a peer restarted with an old boot id, or an attack)",
                self.config.peer_id,
                sender,
                self.round - started,
            )

    async def _accept(self, envelope: Envelope) -> None:
        body = envelope.body
        sender = envelope.sender
        if isinstance(body, Bye):
            self.departed.add(sender)
            self._decoder.forget(sender)
            self._arrived.set()
            return
        self.departed.discard(sender)
        if isinstance(body, Hello):
            if body.model_signature != self._signature_hash:
                self.counters.drop("model_signature")
            return
        try:
            payload = from_message(
                body, self.method.signature(), check_finite=self._limits.allow_nonfinite
            )
        except PayloadMismatch as exc:
            self.counters.drop("mismatch")
            log.debug("%s: payload from %s does not fit: %s", self.config.peer_id, sender, exc)
            return
        if is_control(payload):  # reaches merge at once and alone; changes no model
            stamp = self.clock if self.config.mode == "async" else self.round
            result = self._merge(stamp, [Received(sender, payload)])
            await self._send_payloads(result.replies, stamp)
            return
        if self.config.mode == "async":  # Lamport: never behind a sender, by bounded steps
            self.clock = max(self.clock, min(envelope.round, self.clock + self.round_jump))
        elif (envelope.round, envelope.step) < (self.round, self.step):
            self.counters.drop("stale")  # an earlier round, or an earlier step of this one
            return
        elif envelope.step >= self.config.gossip_steps:
            self.counters.drop("step")  # a peer run with more gossip steps than ours
            return
        elif envelope.round > self.round + self.config.max_staleness + 1:
            self._saw_round(sender, envelope.round)
            self.counters.drop("future")
            return
        self._saw_round(sender, envelope.round)
        self._inbox.add(Arrival(sender, envelope.round, payload, envelope.step))
        self._arrived.set()


def keyring_of(config: NodeConfig) -> Keyring | None:
    """The swarm keyring of ``config`` (None without keys)."""
    if not config.keys:
        return None
    return Keyring(
        keys={key_id: bytes.fromhex(key) for key_id, key in config.keys.items()},
        active_key_id=config.active_key_id,
    )
