"""Replay protection: a sliding window of accepted sequence numbers per sender incarnation.

A sender's incarnation is its ``boot`` id (PROTOCOL.md §2): a random number drawn each time the
peer process starts. Sequence numbers are compared only within one incarnation, so a peer that
crashed and came back with its clock behind (lower sequence numbers) is not taken for a replay:
its new boot id opens a new window. Each sender keeps at most ``max_boots`` windows (the least
recently used goes), and one frame may move a window's top at most ``max_jump`` ahead, so a
single frame cannot push a window so far that the sender's real frames look old.
"""

from __future__ import annotations

import enum
from collections import OrderedDict

__all__ = ["Freshness", "ReplayWindow"]


class Freshness(enum.Enum):
    """What the window says about a sequence number."""

    FRESH = "fresh"
    REPLAY = "replay"  # seen before, or older than the window
    JUMP = "jump"  # more than max_jump ahead of the highest seen in this incarnation


class ReplayWindow:
    """Remembers, per (sender, boot), which of the last `window` sequence numbers were accepted.

    A sequence number is fresh if it is above every one seen (by at most ``max_jump``), or within
    `window` of the highest and not yet seen. The first frame of an incarnation sets its window.
    Beyond ``max_senders`` incarnations in all, the least recently active are forgotten (their
    old frames would then be accepted once more).
    """

    def __init__(
        self, window: int, max_senders: int, *, max_jump: int = 1 << 24, max_boots: int = 4
    ) -> None:
        self._window = window
        self._full = (1 << window) - 1
        self._max_senders = max_senders
        self._max_jump = max_jump
        self._max_boots = max_boots
        # (sender, boot) -> (top, bits), least recently active first
        self._state: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()
        self._boots: dict[str, list[int]] = {}  # sender -> its tracked boots, oldest first

    def check(self, sender: str, boot: int, seq: int) -> Freshness:
        """Whether `seq` of incarnation `boot` of `sender` would be accepted (changes nothing)."""
        state = self._state.get((sender, boot))
        if state is None:
            return Freshness.FRESH
        top, bits = state
        if seq > top:
            return Freshness.JUMP if seq - top > self._max_jump else Freshness.FRESH
        age = top - seq
        fresh = age < self._window and not (bits >> age) & 1
        return Freshness.FRESH if fresh else Freshness.REPLAY

    def is_fresh(self, sender: str, seq: int, boot: int = 0) -> bool:
        """``check(...) is FRESH``."""
        return self.check(sender, boot, seq) is Freshness.FRESH

    def is_new_boot(self, sender: str, boot: int) -> bool:
        """Whether `boot` is an incarnation of `sender` not tracked yet."""
        return (sender, boot) not in self._state

    def record(self, sender: str, seq: int, boot: int = 0) -> None:
        """Mark `seq` as accepted; call only after `check` said FRESH and the message passed."""
        key = (sender, boot)
        state = self._state.pop(key, None)
        if state is None:
            new_state = (seq, 1)
            boots = self._boots.setdefault(sender, [])
            boots.append(boot)
            while len(boots) > self._max_boots:
                self._state.pop((sender, boots.pop(0)), None)
        else:
            top, bits = state
            if seq > top:
                shift = seq - top  # bits of a jump past the window would all fall off anyway
                bits = 1 if shift >= self._window else ((bits << shift) | 1) & self._full
                new_state = (seq, bits)
            else:
                new_state = (top, bits | (1 << (top - seq)))
        self._state[key] = new_state
        while len(self._state) > self._max_senders:
            (old_sender, old_boot), _ = self._state.popitem(last=False)
            self._untrack(old_sender, old_boot)

    def _untrack(self, sender: str, boot: int) -> None:
        boots = self._boots.get(sender, [])
        if boot in boots:
            boots.remove(boot)
        if not boots:
            self._boots.pop(sender, None)

    def forget(self, sender: str) -> None:
        """Drop what is known about every incarnation of `sender`."""
        for boot in self._boots.pop(sender, []):
            self._state.pop((sender, boot), None)

    def __len__(self) -> int:
        return len(self._state)
