"""Graph files: read any format networkx reads into a checked graph on nodes 0..n-1; write.

:func:`read_graph` picks the format by content and extension (see ``topology/formats.py``,
or name it with ``fmt``), reads it with networkx's own reader, and checks it: a graph with no
nodes, a self-loop, an isolated node, parallel edges, or a graph that is not connected
(strongly, when directed) is refused with one line that says what to change.

Reading numbers the nodes ``0..n-1`` in sorted order of the file's labels (numerically when
every label is an integer) and keeps on each node:

* ``label`` — the label as the file has it (an int when it is one);
* ``peer_id`` — the peer id for that node: the label as text, or a deterministic sanitised
  form when the label is not a valid peer id (see ``topology/labels.py``);
* ``lat``/``lon`` — degrees, when the file gives coordinates (``Latitude``/``Longitude`` as in
  the Internet Topology Zoo, ``lat``/``lon``, ``lng``, ``long``).

Link attributes the simulator understands are ``latency_ms`` (>= 0), ``bandwidth_mbps`` (> 0)
and ``loss`` (in [0, 1]); a directed file (or ``directed=True``) gives an ``nx.DiGraph`` whose
arcs keep their own attributes, so a→b and b→a may differ. ``g.graph["file"]`` records what
was read: path, format, how it was chosen, directedness, attributes found and used.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from spargo.topology.errors import TopologyError
from spargo.topology.formats import FORMATS, FormatError, detect, read_raw
from spargo.topology.labels import peer_ids_for_labels

EDGE_ATTRIBUTES = ("latency_ms", "bandwidth_mbps", "loss")
EDGELIST_SUFFIXES = FORMATS["edgelist"].extensions
GRAPH_SUFFIXES = tuple(s for f in FORMATS.values() for s in f.extensions)
#: Node attribute names (lower case) read as coordinates, in degrees.
LATITUDE_KEYS = ("latitude", "lat")
LONGITUDE_KEYS = ("longitude", "lon", "lng", "long")
#: How the format was chosen, as the messages and the report say it.
HOW = {
    "given": "named by --format",
    "content": "detected from content",
    "extension": "by extension",
    "default": "the default",
}
_RULES = {"latency_ms": ">= 0", "bandwidth_mbps": "> 0", "loss": "in [0, 1]"}


def _check_attribute(where: str, key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TopologyError(f"{where}: {key}={value!r} is not a number") from None
    ok = {
        "latency_ms": number >= 0.0,
        "bandwidth_mbps": number > 0.0,
        "loss": 0.0 <= number <= 1.0,
    }[key]
    if not ok or not math.isfinite(number):
        raise TopologyError(f"{where}: {key} must be a finite number {_RULES[key]}, got {value!r}")
    return number


def _known_attributes(where: str, data: Mapping[str, Any]) -> dict[str, float]:
    for key in data:
        near = difflib.get_close_matches(str(key), EDGE_ATTRIBUTES, n=1, cutoff=0.75)
        if near and key not in EDGE_ATTRIBUTES:
            raise TopologyError(
                f"{where}: unknown edge attribute {key!r}; did you mean {near[0]!r}? "
                f"spargo uses {', '.join(EDGE_ATTRIBUTES)} (units in the names)"
            )
    return {k: _check_attribute(where, k, v) for k, v in data.items() if k in EDGE_ATTRIBUTES}


def _sort_labels(labels: list[Hashable]) -> list[Hashable]:
    """Labels in a deterministic order: numeric if all are integers, else as strings."""
    as_ints: list[int] = []
    for label in labels:
        if isinstance(label, bool):
            break
        if isinstance(label, int):
            as_ints.append(label)
            continue
        try:
            as_ints.append(int(str(label)))
        except ValueError:
            break
    if len(as_ints) == len(labels) and len(set(as_ints)) == len(labels):
        return [label for _, label in sorted(zip(as_ints, labels, strict=True))]
    return sorted(labels, key=str)


def _plain_label(label: Hashable) -> int | str:
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    text = str(label)
    try:
        return int(text) if str(int(text)) == text else text
    except ValueError:
        return text


def _simple(path: Path, raw: nx.Graph) -> nx.Graph:
    """A multigraph (Pajek, GML with repeated edges) without parallel edges as a simple graph."""
    if not raw.is_multigraph():
        return raw
    for u, v in raw.edges():
        if raw.number_of_edges(u, v) > 1:
            raise TopologyError(
                f"{path}: {raw.number_of_edges(u, v)} parallel edges {u} -- {v}; "
                "keep one edge per pair of nodes"
            )
    return nx.DiGraph(raw) if raw.is_directed() else nx.Graph(raw)


def _check_shape(path: Path, raw: nx.Graph) -> None:
    """Empty, self-loops, isolated nodes, disconnected: each its own one-line error."""
    if raw.number_of_nodes() == 0:
        raise TopologyError(f"{path}: the graph has no nodes; add at least one edge")
    loops = list(nx.selfloop_edges(raw))
    if loops:
        raise TopologyError(f"{path}: self-loop on node {loops[0][0]!r}; remove it")
    if raw.number_of_nodes() == 1:
        return
    isolated = sorted(map(str, nx.isolates(raw)))
    if isolated:
        raise TopologyError(
            f"{path}: {len(isolated)} isolated node(s) with no edge ({', '.join(isolated[:5])}); "
            "link them or remove them"
        )
    if raw.is_directed():
        if not nx.is_weakly_connected(raw):
            parts = nx.number_weakly_connected_components(raw)
            raise TopologyError(
                f"{path}: the graph is disconnected ({parts} components); "
                "add edges so every peer can reach every other"
            )
        if not nx.is_strongly_connected(raw):
            parts = nx.number_strongly_connected_components(raw)
            raise TopologyError(
                f"{path}: the directed graph is not strongly connected ({parts} strong "
                "components): some peer cannot reach another along the arcs; add arcs back"
            )
    elif not nx.is_connected(raw):
        parts = nx.number_connected_components(raw)
        raise TopologyError(
            f"{path}: the graph is disconnected ({parts} components); "
            "add edges so every peer can reach every other"
        )


def _coordinates(path: Path, data: Mapping[str, Any]) -> dict[str, float]:
    lowered = {str(k).lower(): v for k, v in data.items()}
    out: dict[str, float] = {}
    for name, keys, bound in (("lat", LATITUDE_KEYS, 90.0), ("lon", LONGITUDE_KEYS, 180.0)):
        for key in keys:
            if key in lowered:
                try:
                    value = float(lowered[key])
                except (TypeError, ValueError):
                    raise TopologyError(f"{path}: {key}={lowered[key]!r} is not a number") from None
                if not -bound <= value <= bound:
                    raise TopologyError(f"{path}: {key}={value} is outside [-{bound}, {bound}]")
                out[name] = value
                break
    return out


def _normalise(path: Path, raw: nx.Graph) -> nx.Graph:
    """Check a freshly read graph and renumber it 0..n-1 in sorted-label order."""
    raw = _simple(path, raw)
    _check_shape(path, raw)
    order = _sort_labels(list(raw.nodes))
    index = {label: i for i, label in enumerate(order)}
    peer_ids = peer_ids_for_labels([str(_plain_label(label)) for label in order])
    g: nx.Graph = nx.DiGraph() if raw.is_directed() else nx.Graph()
    for i, label in enumerate(order):
        coordinates = _coordinates(path, raw.nodes[label])
        g.add_node(i, label=_plain_label(label), peer_id=peer_ids[i], **coordinates)
    for u, v, data in raw.edges(data=True):
        where = f"{path}: edge {u} {'->' if raw.is_directed() else '--'} {v}"
        g.add_edge(index[u], index[v], **_known_attributes(where, data))
    node_keys = sorted({str(k) for _, d in raw.nodes(data=True) for k in d})
    edge_keys = sorted({str(k) for _, _, d in raw.edges(data=True) for k in d})
    used = [k for k in EDGE_ATTRIBUTES if k in edge_keys]
    if any("lat" in d and "lon" in d for _, d in g.nodes(data=True)):
        used += [k for k in node_keys if k.lower() in (*LATITUDE_KEYS, *LONGITUDE_KEYS)]
    g.graph["file"] = {
        "path": str(path),
        "directed": g.is_directed(),
        "node_attributes": node_keys,
        "edge_attributes": edge_keys,
        "used": used,
    }
    return g


def read_graph(
    path: str | os.PathLike[str], fmt: str | None = None, *, directed: bool = False
) -> nx.Graph:
    """Read a graph file, check it and number its nodes 0..n-1 (see the module docstring).

    ``fmt``: a format name (``topology.formats.FORMATS``: edgelist, csv, adjlist, gml, gexf,
    pajek, graphml, json, mtx) or None to detect it. ``directed``: read an edge list or
    adjacency list as arcs, and make an undirected file's edges arcs both ways. Returns an
    ``nx.Graph``, or an ``nx.DiGraph`` when the file or ``directed`` says so. Raises
    :class:`TopologyError` (one line: the file, the format, the first line that fails).
    """
    p = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise TopologyError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    if not p.is_file():
        raise TopologyError(f"{p}: no such graph file; check the path")
    name, how = (fmt, "given") if fmt is not None else detect(p)
    try:
        raw = read_raw(p, name, directed)
    except FormatError as err:
        raise TopologyError(_unreadable(p, name, how, err)) from None
    except (TypeError, ValueError, KeyError, nx.NetworkXError) as err:
        raise TopologyError(
            f"{p}: cannot read it as {name} ({HOW[how]}): {err}; check the file or pass --format"
        ) from None
    if directed and not raw.is_directed():
        raw = raw.to_directed()
    g = _normalise(p, raw)
    g.graph["file"].update(format=name, detected_by=how)
    return g


def _unreadable(path: Path, name: str, how: str, err: FormatError) -> str:
    text = err.text
    if err.line and not text:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            text = lines[err.line - 1] if err.line <= len(lines) else ""
        except OSError:
            text = ""
    shown = f" {text.strip()[:60]!r}" if text.strip() else ""
    reason = " ".join(err.reason.split())[:120]
    where = f"line {err.line}{shown}: " if err.line else ""
    return (
        f"{path}: cannot read it as {name} ({HOW[how]}); {where}{reason}; "
        "fix the file or name the format with --format"
    )


def _names(g: nx.Graph) -> dict[Any, Any]:
    """Node -> name to write: its "label" attribute if every node has a distinct one."""
    labels = [g.nodes[v].get("label") for v in g.nodes]
    if None not in labels and len({str(label) for label in labels}) == len(labels):
        return {v: g.nodes[v]["label"] for v in g.nodes}
    return {v: v for v in g.nodes}


def write_graph(g: nx.Graph, path: str | os.PathLike[str]) -> None:
    """Write ``g`` as an edge list (``.edgelist``, ``.edges``, ``.el``, ``.txt``), GraphML or
    node-link JSON (by extension), with its known link attributes and coordinates; a
    ``DiGraph`` is written directed, one line or element per arc."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (*EDGELIST_SUFFIXES, ".graphml", ".json"):
        raise TopologyError(
            f"{p}: cannot write {suffix or '(no extension)'!r}; use one of "
            f"{', '.join((*EDGELIST_SUFFIXES, '.graphml', '.json'))}"
        )
    if any(u == v for u, v in g.edges):
        raise TopologyError("write_graph: the graph has a self-loop; remove it before writing")
    names = _names(g)
    edges = [(names[u], names[v], edge_attributes(g, u, v)) for u, v in g.edges]
    if suffix in EDGELIST_SUFFIXES:
        _write_edgelist(p, [names[v] for v in g.nodes if g.degree(v) == 0], edges)
        return
    out: nx.Graph = nx.DiGraph() if g.is_directed() else nx.Graph()
    for v in g.nodes:
        where = {k: float(g.nodes[v][k]) for k in ("lat", "lon") if k in g.nodes[v]}
        out.add_node(names[v], **where)
    out.add_edges_from((u, v, data) for u, v, data in edges)
    if suffix == ".graphml":
        nx.write_graphml(nx.relabel_nodes(out, {v: str(v) for v in out.nodes}), p)
    else:
        doc = nx.node_link_data(out, edges="edges")
        p.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _write_edgelist(
    path: Path, isolated: list[Any], edges: list[tuple[Any, Any, dict[str, float]]]
) -> None:
    for name in [*isolated, *(e[0] for e in edges), *(e[1] for e in edges)]:
        if not str(name) or any(ch.isspace() or ch == "#" for ch in str(name)):
            raise TopologyError(
                f"write_graph: node name {name!r} has spaces or '#'; use GraphML or JSON"
            )
    lines = ["# spargo topology edge list: u v [latency_ms=.. bandwidth_mbps=.. loss=..]"]
    lines += [str(name) for name in isolated]
    for u, v, data in edges:
        attrs = "".join(f" {k}={data[k]!r}" for k in EDGE_ATTRIBUTES if k in data)
        lines.append(f"{u} {v}{attrs}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def edge_attributes(g: nx.Graph, u: int, v: int) -> dict[str, float]:
    """The link attributes (latency_ms, bandwidth_mbps, loss) present on edge (or arc) u→v."""
    if not g.has_edge(u, v):
        raise TopologyError(f"no edge {u} -- {v} in the graph; pick two neighbours")
    data = g.edges[u, v]
    return {k: float(data[k]) for k in EDGE_ATTRIBUTES if k in data}
