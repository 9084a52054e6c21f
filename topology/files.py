"""Graph files: edge lists, GraphML and node-link JSON, with optional link attributes.

Formats, chosen by extension:

* ``.edgelist`` / ``.txt`` — one edge per line, ``u v`` then optional ``key=value`` pairs
  (``0 1 latency_ms=20 bandwidth_mbps=100 loss=0.01``); a line with one label declares a
  node; ``#`` starts a comment. networkx's ``u v {'key': value}`` lines are accepted too.
* ``.graphml`` — GraphML as networkx reads and writes it.
* ``.json`` — node-link JSON (``{"nodes": [{"id": ...}], "edges": [{"source": ..., ...}]}``;
  ``"links"`` is accepted for ``"edges"``).

Reading relabels nodes to ``0..n-1`` in sorted order of the original labels (numerically when
every label is an integer) and keeps the original label as node attribute ``"label"``, so
every peer that reads the same file numbers it the same way. Writing uses the ``"label"``
attribute as the node name where every node has a distinct one, so files round-trip.
Link attributes the simulator understands are ``latency_ms`` (>= 0), ``bandwidth_mbps``
(> 0) and ``loss`` (in [0, 1]); other attributes in GraphML/JSON are ignored.
"""

from __future__ import annotations

import ast
import json
import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import networkx as nx

from spargo.topology.errors import TopologyError

EDGE_ATTRIBUTES = ("latency_ms", "bandwidth_mbps", "loss")
EDGELIST_SUFFIXES = (".edgelist", ".txt")
GRAPH_SUFFIXES = (*EDGELIST_SUFFIXES, ".graphml", ".json")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in GRAPH_SUFFIXES:
        raise TopologyError(
            f"{path}: unknown graph file extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(GRAPH_SUFFIXES)}"
        )
    return suffix


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
        rule = {"latency_ms": ">= 0", "bandwidth_mbps": "> 0", "loss": "in [0, 1]"}[key]
        raise TopologyError(f"{where}: {key} must be a finite number {rule}, got {value!r}")
    return number


def _known_attributes(where: str, data: Mapping[str, Any]) -> dict[str, float]:
    return {k: _check_attribute(where, k, v) for k, v in data.items() if k in EDGE_ATTRIBUTES}


def _parse_edgelist_data(where: str, tokens: list[str]) -> dict[str, Any]:
    rest = " ".join(tokens)
    if rest.startswith("{"):
        try:
            data = ast.literal_eval(rest)
        except (ValueError, SyntaxError):
            raise TopologyError(f"{where}: cannot parse attributes {rest!r}") from None
        if not isinstance(data, dict):
            raise TopologyError(f"{where}: attributes must be a dict, got {rest!r}")
        return data
    data = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise TopologyError(
                f"{where}: expected key=value after the two node labels, got {token!r}"
            )
        if key not in EDGE_ATTRIBUTES:
            raise TopologyError(
                f"{where}: unknown edge attribute {key!r}; use {', '.join(EDGE_ATTRIBUTES)}"
            )
        data[key] = value
    return data


def _read_edgelist(path: Path) -> nx.Graph:
    g = nx.Graph()
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        tokens = line.split()
        if len(tokens) == 1:
            g.add_node(tokens[0])
            continue
        u, v = tokens[0], tokens[1]
        data = _known_attributes(where, _parse_edgelist_data(where, tokens[2:]))
        if u == v:
            raise TopologyError(f"{where}: self-loop {u} -- {u}; remove the line")
        g.add_edge(u, v, **data)
    return g


def _read_graphml(path: Path) -> nx.Graph:
    try:
        g = nx.read_graphml(path)
    except (nx.NetworkXError, ValueError, KeyError, ParseError) as err:
        raise TopologyError(f"{path}: not valid GraphML ({err}); check the file") from None
    if g.is_multigraph():
        raise TopologyError(f"{path}: parallel edges found; keep one edge per pair of nodes")
    return g


def _read_json(path: Path) -> nx.Graph:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TopologyError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise TopologyError(f'{path}: node-link JSON needs a "nodes" list')
    edges = data.get("edges", data.get("links", []))
    if not isinstance(edges, list):
        raise TopologyError(f'{path}: "edges" must be a list')
    g = nx.Graph()
    for node in data["nodes"]:
        if not isinstance(node, dict) or "id" not in node:
            raise TopologyError(f'{path}: every node needs an "id", got {node!r}')
        g.add_node(node["id"])
    for edge in edges:
        if not isinstance(edge, dict) or "source" not in edge or "target" not in edge:
            raise TopologyError(f'{path}: every edge needs "source" and "target", got {edge!r}')
        g.add_edge(edge["source"], edge["target"], **edge)
    return g


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


def _normalise(path: Path, raw: nx.Graph) -> nx.Graph:
    """Check a freshly read graph and renumber it 0..n-1 in sorted-label order."""
    raw = nx.Graph(raw)  # a directed file becomes undirected: gossip links carry both ways
    if raw.number_of_nodes() == 0:
        raise TopologyError(f"{path}: the graph has no nodes; add at least one edge")
    loops = list(nx.selfloop_edges(raw))
    if loops:
        raise TopologyError(f"{path}: self-loop on node {loops[0][0]!r}; remove it")
    if not nx.is_connected(raw):
        parts = nx.number_connected_components(raw)
        raise TopologyError(
            f"{path}: the graph is disconnected ({parts} components); "
            "add edges so every peer can reach every other"
        )
    order = _sort_labels(list(raw.nodes))
    index = {label: i for i, label in enumerate(order)}
    g = nx.Graph()
    for i, label in enumerate(order):
        g.add_node(i, label=_plain_label(label))
    for u, v, data in raw.edges(data=True):
        where = f"{path}: edge {u} -- {v}"
        g.add_edge(index[u], index[v], **_known_attributes(where, data))
    return g


def _plain_label(label: Hashable) -> int | str:
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    text = str(label)
    try:
        return int(text) if str(int(text)) == text else text
    except ValueError:
        return text


def read_graph(path: str | os.PathLike[str]) -> nx.Graph:
    """Read a graph file (format by extension), check it and number its nodes 0..n-1."""
    p = Path(path)
    suffix = _suffix(p)
    if not p.is_file():
        raise TopologyError(f"{p}: no such graph file; check the path")
    try:
        if suffix in EDGELIST_SUFFIXES:
            raw = _read_edgelist(p)
        elif suffix == ".graphml":
            raw = _read_graphml(p)
        else:
            raw = _read_json(p)
    except UnicodeDecodeError:
        raise TopologyError(f"{p}: not a text file; graph files are UTF-8 text") from None
    except TypeError as err:  # unhashable node ids in JSON, for example
        raise TopologyError(f"{p}: unusable node or edge ({err})") from None
    return _normalise(p, raw)


def _names(g: nx.Graph) -> dict[Any, Any]:
    """Node -> name to write: its "label" attribute if every node has a distinct one."""
    labels = [g.nodes[v].get("label") for v in g.nodes]
    if None not in labels and len({str(label) for label in labels}) == len(labels):
        return {v: g.nodes[v]["label"] for v in g.nodes}
    return {v: v for v in g.nodes}


def write_graph(g: nx.Graph, path: str | os.PathLike[str]) -> None:
    """Write ``g`` in the format named by the extension, with its known link attributes."""
    p = Path(path)
    suffix = _suffix(p)
    if any(u == v for u, v in g.edges):
        raise TopologyError("write_graph: the graph has a self-loop; remove it before writing")
    names = _names(g)
    edges = [(names[u], names[v], edge_attributes(g, u, v)) for u, v in g.edges]
    if suffix in EDGELIST_SUFFIXES:
        _write_edgelist(p, [names[v] for v in g.nodes if g.degree(v) == 0], edges)
    elif suffix == ".graphml":
        out = nx.Graph()
        out.add_nodes_from(str(names[v]) for v in g.nodes)
        out.add_edges_from((str(u), str(v), data) for u, v, data in edges)
        nx.write_graphml(out, p)
    else:
        doc = {
            "directed": False,
            "multigraph": False,
            "nodes": [{"id": names[v]} for v in g.nodes],
            "edges": [{"source": u, "target": v, **data} for u, v, data in edges],
        }
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
    """The link attributes (latency_ms, bandwidth_mbps, loss) present on edge u -- v."""
    if not g.has_edge(u, v):
        raise TopologyError(f"no edge {u} -- {v} in the graph; pick two neighbours")
    data = g.edges[u, v]
    return {k: float(data[k]) for k in EDGE_ATTRIBUTES if k in data}
