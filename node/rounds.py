"""Rounds mode of ``node.node.Node``: train, then Q gossip steps, then record and checkpoint.

One round (docs/algorithms.md §0.3, §4.10): ``begin_round`` → local training → Q =
``config.gossip_steps`` gossip steps → evaluate → checkpoint. Each step is one exchange, what
a round did before the option existed: ``method.begin_step`` → send to this round's targets →
wait for the expected senders' messages of this (round, step), at most ``round_deadline_s``
→ merge. Frames carry the step (PROTOCOL.md §2) and the inbox files arrivals under (round,
step), so the Q exchanges of one round never mix. A method does its round-level work
(tracking's correction, pruning, schedules) once per round through ``begin_step``'s step
index (``node.methods.base.Method``). Q = 1 runs exactly as before: one step, numbered 0,
which no frame writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from spargo.node.inbox import Arrival, Inbox, to_received
from spargo.node.methods.payloads import MergeResult, Payload, Received

if TYPE_CHECKING:
    from spargo.node.config import NodeConfig
    from spargo.node.methods.base import Method
    from spargo.node.metrics import Counters
    from spargo.node.view import PeerView


class RoundsLoop:
    """The rounds-mode loop of ``Node`` (which provides every attribute and method used)."""

    config: NodeConfig
    method: Method
    view: PeerView
    round: int
    step: int
    departed: set[str]
    _inbox: Inbox
    _arrived: asyncio.Event
    _stop: asyncio.Event
    _latest_round: dict[str, int]
    _last_loss: float

    counters: Counters
    # Provided by Node and its other mixins (node.exchange, node.health).
    _send_hello: Callable[[], Coroutine[Any, Any, None]]
    _train: Callable[[int], Awaitable[float]]
    _send_payloads: Callable[[Sequence[tuple[str, Payload]], int], Coroutine[Any, Any, None]]
    _outgoing: Callable[[int, Sequence[str]], list[tuple[str, Payload]]]
    _merge: Callable[[int, list[Received]], MergeResult]
    _track_silence: Callable[[Iterable[str], Iterable[str]], None]
    _record: Callable[[int, dict[str, float]], Awaitable[None]]
    _checkpoint_now: Callable[[], bool]
    _write_checkpoint: Callable[[], Awaitable[None]]

    async def _rounds_loop(self) -> None:
        await self._send_hello()
        while self.round < self.config.rounds and not self._stop.is_set():
            self._catch_up()
            r = self.round
            self.method.begin_round(r)
            self._last_loss = await self._train(r)
            stats, heard = await self._gossip(r)
            # A method that expects nothing (``local``) has no silent neighbours to report.
            expected = self.view.expected_senders(r) if self.method.expected_messages(r) else []
            self._track_silence(expected, heard)
            self.round, self.step = r + 1, 0
            await self._record(r, stats)  # metrics before the checkpoint
            if self._checkpoint_now():
                await self._write_checkpoint()

    async def _gossip(self, round_index: int) -> tuple[dict[str, float], set[str]]:
        """The round's Q gossip steps; returns the last merge's statistics and every sender
        heard from in any step."""
        steps = self.config.gossip_steps
        heard: set[str] = set()
        result = MergeResult()
        # After stop() the remaining steps still run (without waiting: _gather returns at
        # once), so the round's last-step work (a correction, a re-prune) is never skipped.
        for step in range(steps):
            self.step = step
            self.method.begin_step(round_index, step, steps)
            targets = self._live_targets(round_index)
            await self._send_payloads(self._outgoing(round_index, targets), round_index)
            arrivals = await self._gather(round_index, step)
            heard.update(arrivals)
            result = self._merge(round_index, to_received(round_index, arrivals))
            await self._send_payloads(result.replies, round_index)
        return result.stats.as_dict(), heard

    def _catch_up(self) -> None:
        """Jump ahead when every live neighbour we heard from is past our next round.

        That is a peer back from a crash or a partition: its old rounds are stale for
        everyone. One fast peer (one nobody sends to, say) does not drag the others along, nor
        does one that lies about its round (every live neighbour must be ahead).
        """
        live = [p for p in self.view.neighbours if p not in self.departed]
        heard = [self._latest_round[p] for p in live if p in self._latest_round]
        # Every live neighbour must vouch for the jump (not just those heard from so far), so
        # a neighbour that claims a far round before the others speak cannot drag us along;
        # and each message moved its sender's claim by at most ``round_jump`` (_saw_round).
        if heard and len(heard) == len(live) and min(heard) > self.round + 1:
            self.round = min(min(heard), self.config.rounds - 1)

    def _live_targets(self, round_index: int) -> list[str]:
        """This round's targets minus peers that said Bye (a method that splits mass among
        its targets, push-sum, must not count a peer the send would skip). Every gossip step
        of a round sends to the same targets (the sampler draws per round)."""
        return [p for p in self.view.targets(round_index) if p not in self.departed]

    async def _gather(self, round_index: int, step: int = 0) -> dict[str, list[Arrival]]:
        """Wait for every live expected sender's messages of this round's ``step``, or the
        deadline (``round_deadline_s``, per step)."""
        per_sender = self.method.expected_messages(round_index)
        expected = [p for p in self.view.expected_senders(round_index) if p not in self.departed]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.round_deadline_s
        while not self._stop.is_set():
            waiting = [
                p
                for p in expected
                if self._inbox.count(round_index, p, step) < per_sender and p not in self.departed
            ]
            remaining = deadline - loop.time()
            if not waiting or remaining <= 0:
                break
            self._arrived.clear()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                # cancellation that lands as the event fires, and the peer would not stop.
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
        received = self._inbox.take(round_index, step)
        self.counters.drop("stale", self._inbox.drop_before(round_index, step))
        return received
