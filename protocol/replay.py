"""Replay protection: a sliding window of accepted sequence numbers per sender."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ReplayWindow"]


class ReplayWindow:
    """Remembers, per sender, which of the last `window` sequence numbers were accepted.

    A sequence number is fresh if it is above every one seen, or within `window` of the highest
    and not yet seen. The state of the least recently active senders is dropped beyond
    `max_senders` (a dropped sender's old messages would then be accepted again once).
    """

    def __init__(self, window: int, max_senders: int) -> None:
        self._window = window
        self._full = (1 << window) - 1
        self._max_senders = max_senders
        self._state: OrderedDict[str, tuple[int, int]] = OrderedDict()  # sender -> (top, bits)

    def is_fresh(self, sender: str, seq: int) -> bool:
        """Whether `seq` from `sender` would be accepted (changes nothing)."""
        state = self._state.get(sender)
        if state is None:
            return True
        top, bits = state
        if seq > top:
            return True
        age = top - seq
        return age < self._window and not (bits >> age) & 1

    def record(self, sender: str, seq: int) -> None:
        """Mark `seq` as accepted; call only after `is_fresh` said yes and the message passed."""
        state = self._state.pop(sender, None)
        if state is None:
            new_state = (seq, 1)
        else:
            top, bits = state
            if seq > top:
                shift = seq - top  # bits of a jump past the window would all fall off anyway
                bits = 1 if shift >= self._window else ((bits << shift) | 1) & self._full
                new_state = (seq, bits)
            else:
                new_state = (top, bits | (1 << (top - seq)))
        self._state[sender] = new_state
        while len(self._state) > self._max_senders:
            self._state.popitem(last=False)

    def forget(self, sender: str) -> None:
        """Drop what is known about `sender`."""
        self._state.pop(sender, None)

    def __len__(self) -> int:
        return len(self._state)
