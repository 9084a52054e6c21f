"""Node labels are peer ids: the label → peer-id rule, and matching a swarm's ids to a graph.

A graph file's node labels name the peers: the peer called ``10`` sits on the node labelled
``10``, never on whatever node sorts tenth. A label that is not a valid peer id (empty, with
``/``, ``+`` or ``#`` — MQTT topic characters — or control characters, or longer than
:data:`MAX_PEER_ID_LEN`) is sanitised deterministically: each bad character becomes ``_``, and
a name that collides with another gets ``~2``, ``~3``, ... in label order. Valid labels are
kept exactly, so they win any collision.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from spargo.topology.errors import TopologyError

#: The protocol's limit on names (``protocol.limits.Limits.max_name_len``).
MAX_PEER_ID_LEN = 256
_BAD = frozenset("/+#")


def is_peer_id(text: str) -> bool:
    """Whether ``text`` can be a peer id as it is (non-empty, no ``/ + #``, printable)."""
    return (
        0 < len(text) <= MAX_PEER_ID_LEN
        and not any(ch in _BAD or not ch.isprintable() for ch in text)
        and text.strip() == text
    )


def _clean(text: str) -> str:
    cleaned = "".join("_" if ch in _BAD or not ch.isprintable() else ch for ch in text.strip())
    return cleaned[: MAX_PEER_ID_LEN - 8] or "node"


def peer_ids_for_labels(labels: Sequence[str]) -> list[str]:
    """One distinct peer id per label, in the same order (labels must be distinct).

    Valid labels map to themselves; the others are sanitised (see the module docstring).
    """
    out: list[str | None] = [label if is_peer_id(label) else None for label in labels]
    taken = {label for label in out if label is not None}
    for i, label in enumerate(labels):
        if out[i] is not None:
            continue
        base = _clean(label)
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}~{k}"
        taken.add(name)
        out[i] = name
    return [name for name in out if name is not None]


def file_peer_ids(g: nx.Graph) -> list[str] | None:
    """The peer id of each node 0..n-1 when ``g`` was read from a file, else None."""
    ids = [g.nodes[v].get("peer_id") for v in range(g.number_of_nodes())]
    if g.number_of_nodes() == 0 or any(not isinstance(p, str) for p in ids):
        return None
    return [str(p) for p in ids]


def label_map(g: nx.Graph) -> dict[str, str]:
    """File label (as text) → peer id, for every node of a graph read from a file."""
    return {str(g.nodes[v]["label"]): str(g.nodes[v]["peer_id"]) for v in sorted(g.nodes)}


def _few(items: Sequence[str], k: int = 4) -> str:
    shown = ", ".join(repr(x) for x in list(items)[:k])
    return shown + (f" … ({len(items)} in all)" if len(items) > k else "")


def match_labels(peer_ids: Sequence[str], g: nx.Graph) -> dict[str, int]:
    """Peer id → node, where each peer must be the node whose file label it carries.

    Raises :class:`TopologyError` naming a few labels without a peer and a few peers without
    a label when the two sets differ.
    """
    by_id = {str(g.nodes[v]["peer_id"]): int(v) for v in g.nodes}
    ids = list(peer_ids)
    if set(ids) != set(by_id):
        no_peer = sorted(set(by_id) - set(ids), key=lambda p: by_id[p])
        no_label = sorted(set(ids) - set(by_id))
        raise TopologyError(
            "the peer ids do not match the graph file's node labels (a label names its peer): "
            f"labels without a peer: {_few(no_peer) or 'none'}; "
            f"peers without a label: {_few(no_label) or 'none'}; "
            "rename the peers or the labels"
        )
    return {p: by_id[p] for p in ids}


def check_distinct(peer_ids: Sequence[str]) -> None:
    """Raise when an id repeats (two peers cannot share a node)."""
    if len(set(peer_ids)) != len(peer_ids):
        raise TopologyError("peer ids must be distinct; a duplicated id would share a node")
