"""The peer: one asyncio node that trains, gossips and merges, on any transport.

Rounds mode (``node.rounds``): train E local steps → Q gossip steps (each: send to this
round's targets → wait for the expected senders up to a deadline → merge) → evaluate →
checkpoint. Asynchronous mode: training and
gossip run on independent clocks and messages merge on arrival, weighted by staleness.
Background work lives in one ``TaskGroup`` of named tasks. Blocking work leaves the event
loop: training through ``training_runner``, evaluation and checkpoint writing through
``offload`` (both a worker thread by default; the simulator runs them inline on its clock).

Payloads cross the seam in ``node.payload``: each frame is decoded once, checked against the
method's signature once, filed in the ``Inbox`` and handed to ``method.merge`` with its
staleness; ``merge`` runs inside the bad-data guard (``_merge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from torch import nn

from spargo.node.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from spargo.node.config import NodeConfig
from spargo.node.errors import CheckpointError
from spargo.node.exchange import MergeObserver, OutgoingFilter, PayloadExchange
from spargo.node.health import PeerHealth, checkpoint_mismatch
from spargo.node.identity import Credentials
from spargo.node.inbox import to_received
from spargo.node.methods.base import Method
from spargo.node.metrics import Counters, RoundMetrics
from spargo.node.rounds import RoundsLoop
from spargo.node.tasks import Dataset
from spargo.node.training import LocalTrainer, TrainConfig
from spargo.node.transports.base import Transport
from spargo.node.view import PeerView
from spargo.protocol import Bye, Limits

log = logging.getLogger("spargo.node")

T = TypeVar("T")
#: ``runner(fn)`` runs blocking training work; real peers use a worker thread.
TrainingRunner = Callable[[Callable[[], float]], Awaitable[float]]
#: ``offload(fn)`` runs other blocking work (evaluation, checkpoint writes) off the loop.
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]


async def run_inline(fn: Callable[[], T]) -> T:
    """An ``Offload`` that runs ``fn`` on the loop (simulations: a thread would let the
    virtual clock jump past unfinished work)."""
    return fn()


#: Sequence numbers jump by this much after a restart, past anything sent but not checkpointed.
RESTART_SEQ_GAP = 1 << 20


@dataclass(frozen=True)
class LocalData:
    """A peer's own data: a training set, a local test split, optionally a global test set."""

    train: Dataset
    test: Dataset
    global_test: Dataset | None = None


class Node(RoundsLoop, PayloadExchange, PeerHealth):
    """One gossip-learning peer."""

    def __init__(
        self,
        config: NodeConfig,
        model: nn.Module,
        data: LocalData,
        view: PeerView,
        transport: Transport,
        method: Method,
        *,
        training_runner: TrainingRunner | None = None,
        offload: Offload | None = None,
        on_round: Callable[[RoundMetrics], None] | None = None,
        limits: Limits | None = None,
        initial_seq: int = 0,
        outgoing_filter: OutgoingFilter | None = None,
        merge_observer: MergeObserver | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """``initial_seq``: where sequence numbers start. Real peers pass the wall clock in
        microseconds, so a peer restarted without its checkpoint still sends numbers above
        everything its previous life sent (the others' replay windows would drop them).

        ``outgoing_filter(round, [(target, payload), ...])`` may rewrite what the method
        sends, per target, before it is encoded (the simulator's attackers equivocate this
        way); ``merge_observer(round, received)`` sees every merge's input (the simulator's
        merge log). Both default to none.

        ``credentials``: this peer's signing key, the roster it checks senders against, and
        its boot id (``node.identity``; default: none, none, random)."""
        self.config = config
        self.model = model
        self.data = data
        self.view = view
        self.transport = transport
        self.method = method
        self.counters = Counters()
        self.history: list[RoundMetrics] = []
        self.round = 0
        self.step = 0
        self.seq = initial_seq
        self.departed: set[str] = set()
        self._run_training: TrainingRunner = training_runner or asyncio.to_thread
        self._offload: Offload = offload or asyncio.to_thread
        self._on_round = on_round
        self._outgoing_filter = outgoing_filter
        self._merge_observer = merge_observer
        self._init_exchange(limits or Limits(), credentials)
        self._trainer = LocalTrainer(
            model,
            data.train,
            TrainConfig(config.local_steps, config.batch_size, config.lr, config.momentum),
            seed=config.seed,
        )
        self._stop = asyncio.Event()
        self._model_lock = asyncio.Lock()
        #: Async mode: the Lamport clock stamped on messages (see ``_async_loops``).
        self.clock = 0
        self._merge_log: list[dict[str, float]] = []
        self._train_rng = random.Random(config.seed * 2 + 1)
        self._gossip_rng = random.Random(config.seed * 2 + 2)
        self._last_loss = math.nan
        self._init_health()

    # --- lifecycle -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the node to finish its current step, say Bye, checkpoint and return."""
        self._stop.set()

    async def run(self) -> list[RoundMetrics]:
        """Run until the configured rounds are done (or ``stop()``); returns the history.

        Resumes from the checkpoint first unless ``resume()`` (or ``start_fresh()``) was
        already called: a real peer does that before connecting, so a checkpoint that does
        not fit is an immediate one-line error, not one raised inside this task group."""
        if not self._resume_decided:
            self.resume()
        async with asyncio.TaskGroup() as group:
            receiver = group.create_task(
                self._receive_loop(), name=f"{self.config.peer_id}:receive"
            )
            try:
                if self.config.mode == "rounds":
                    await self._rounds_loop()
                else:
                    await self._async_loops(group)
            finally:
                await self._shutdown()
                receiver.cancel()
        return self.history

    def start_fresh(self) -> None:
        """Ignore any checkpoint: start at round 0 (the next write replaces the old file)."""
        self._resume_decided = True

    def resume(self) -> bool:
        """Load the last checkpoint if one exists; returns whether one was loaded.

        ``CheckpointError`` (one line naming the file and what does not fit) for a truncated
        or corrupt file, or one made for another peer, method or model."""
        self._resume_decided = True
        if self.config.checkpoint_dir is None:
            return False
        path = checkpoint_path(self.config.checkpoint_dir, self.config.peer_id)
        if not path.exists():
            return False
        state = load_checkpoint(path)
        problem = checkpoint_mismatch(state, self.config, self.model, self._signature_hash)
        if problem is not None:
            raise CheckpointError(
                f"checkpoint {path} was made for {problem}; pass --fresh to start over"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            self.round = int(state["round"])
            self.seq = max(self.seq, int(state["seq"]) + RESTART_SEQ_GAP)
            self.clock = int(state.get("clock", self.round))
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"checkpoint {path} does not fit this model/method ({first}); "
                "pass --fresh to start over"
            ) from exc
        log.info("%s resumed from %s at round %d", self.config.peer_id, path, self.round)
        return True

    def _checkpoint_state(self) -> dict[str, Any]:
        """A snapshot to write: copies, so training may go on while a thread writes it."""
        return {
            "peer_id": self.config.peer_id,
            "method_name": self.config.method,
            "signature": self._signature_hash,
            "round": self.round,
            "seq": self.seq,
            "clock": self.clock,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "method": self.method.state_dict(),
        }

    async def _write_checkpoint(self) -> None:
        """Snapshot on the loop, write off it (``offload``). A failed write (full disk,
        read-only mount) is a warning, counted, and retried next round: training goes on."""
        if self.config.checkpoint_dir is None:
            return
        path = checkpoint_path(self.config.checkpoint_dir, self.config.peer_id)
        state = self._checkpoint_state()
        try:
            await self._offload(lambda: save_checkpoint(path, state))
        except CheckpointError as exc:
            self.checkpoint_failures += 1
            self._checkpoint_due = True
            log.warning("%s: %s; will retry next round", self.config.peer_id, exc)
            return
        self._checkpoint_due = False

    def _checkpoint_now(self) -> bool:
        """Whether this round writes a checkpoint (its period, or a retry of a failed one)."""
        return self._checkpoint_due or self.round % self.config.checkpoint_every == 0

    async def _shutdown(self) -> None:
        bye = Bye(reason="shutdown")
        await self._send_all([(peer, bye) for peer in self.view.neighbours], self.round)
        await self._write_checkpoint()

    # --- training ------------------------------------------------------------------
    async def _train(self, round_index: int) -> float:
        async with self._model_lock:
            return await self._run_training(
                lambda: self._trainer.train_round(
                    round_index, self.method.loss_term, self.method.after_step
                )
            )

    # --- asynchronous mode --------------------------------------------------------------
    async def _async_loops(self, group: asyncio.TaskGroup) -> None:
        """Training and gossip on independent clocks; merges happen as messages arrive.

        Messages carry a Lamport clock, not the burst count: it ticks once per training
        burst and jumps to the largest clock received, so a slow device's updates are not
        "stale" to fast ones just because it trains less often, and staleness counts
        causal steps. ``self.round`` stays the number of local bursts (``rounds`` caps it).
        """
        await self._send_hello()
        gossip = group.create_task(self._gossip_loop(), name=f"{self.config.peer_id}:gossip")
        merger = group.create_task(self._merge_loop(), name=f"{self.config.peer_id}:merge")
        try:
            while self.round < self.config.rounds and not self._stop.is_set():
                r = self.round
                self.method.begin_round(self.clock)
                self._last_loss = await self._train(self.clock)
                self.clock += 1
                await self._sleep(self._period(self.config.train_period_s, self._train_rng))
                self.round = r + 1  # the burst is complete with the merges that followed it
                heard, self._heard_async = self._heard_async, set()
                listens = self.method.expected_messages(self.clock) > 0  # not ``local``
                self._track_silence(self.view.neighbours if listens else [], heard)
                await self._record(r, self._drain_merge_log())
                if self._checkpoint_now():
                    await self._write_checkpoint()
        finally:
            gossip.cancel()
            merger.cancel()

    def _period(self, period_s: float, rng: random.Random) -> float:
        """The next wait: fixed, or exponential with that mean (Poisson clocks)."""
        return rng.expovariate(1.0 / period_s) if self.config.poisson else period_s

    def _drain_merge_log(self) -> dict[str, float]:
        """Merge statistics since the last record: means, plus how many merges there were."""
        log_, self._merge_log = self._merge_log, []
        if not log_:
            return {"merges": 0.0}
        keys = sorted({key for stats in log_ for key in stats})
        out = {key: float(np.mean([m[key] for m in log_ if key in m])) for key in keys}
        out["merges"] = float(len(log_))
        return out

    async def _gossip_loop(self) -> None:
        while not self._stop.is_set():
            await self._sleep(self._period(self.config.gossip_period_s, self._gossip_rng))
            if self._stop.is_set():  # _sleep returns at once after stop(): never spin
                return
            clock = self.clock
            async with self._model_lock:
                payloads = self._outgoing(clock, self._live_targets(clock))
            await self._send_payloads(payloads, clock)

    async def _merge_loop(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            pending, too_old = self._inbox.take_fresh(self.clock, self.config.max_staleness)
            self.counters.drop("stale", too_old)
            self._heard_async.update(pending)
            if pending:
                async with self._model_lock:
                    result = self._merge(self.clock, to_received(self.clock, pending))
                    self._merge_log.append(result.stats.as_dict())
                await self._send_payloads(result.replies, self.clock)

    async def _sleep(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):  # not wait_for: see _gather
                await self._stop.wait()

    # --- metrics -----------------------------------------------------------------------
    def _evaluate(self) -> tuple[float, float]:
        """(local, global) accuracy now (global NaN without a global test set); blocking."""
        _, accuracy = self._trainer.evaluate(self.data.test)
        global_accuracy = math.nan
        if self.data.global_test is not None:
            _, global_accuracy = self._trainer.evaluate(self.data.global_test)
        return accuracy, global_accuracy

    async def _record(self, round_index: int, merge_stats: dict[str, float]) -> None:
        accuracy = global_accuracy = math.nan
        last = round_index + 1 == self.config.rounds
        if round_index % self.config.eval_every == 0 or last:
            async with self._model_lock:  # async mode: no merge while a thread reads the model
                accuracy, global_accuracy = await self._offload(self._evaluate)
        drops = self.all_drops()
        metrics = RoundMetrics(
            peer_id=self.config.peer_id,
            round=round_index,
            time_s=asyncio.get_running_loop().time(),
            loss=self._last_loss,
            accuracy=accuracy,
            global_accuracy=None if self.data.global_test is None else global_accuracy,
            density=self.method.density(),
            bytes_sent=self.counters.bytes_sent,
            bytes_received=self.counters.bytes_received,
            messages_sent=self.counters.messages_sent,
            messages_received=self.counters.messages_received,
            messages_dropped=sum(drops.values()),
            drops=drops,
            merge=dict(merge_stats),
            send_failures=self.counters.send_failures,
            silent=self.silent_neighbours(),
        )
        self.history.append(metrics)
        if self._on_round is not None:
            self._on_round(metrics)
