"""Graph file formats: which one a file is (by content, then extension) and networkx's reader.

One row per format in :data:`FORMATS`; each reader takes the file's path and whether to read
it as directed (only formats that do not say so themselves honour that) and returns the raw
networkx graph with the file's own node labels. Parsing is networkx's (``parse_edgelist``,
``read_adjlist``, ``read_gml``, ``read_gexf``, ``read_pajek``, ``read_graphml``,
``node_link_graph``) and scipy's (``mmread``); what is ours is detection, the header of a
delimited edge list, and turning a reader's failure into :class:`FormatError` with the first
line that does not parse.

Detection: a file whose content announces its format (an XML root element ``<graphml>`` or
``<gexf>``, a ``%%MatrixMarket`` banner, a JSON object, a GML ``graph [``, a Pajek
``*Vertices``) is read as that; otherwise the extension decides (``.adjlist``; ``.csv`` and
``.tsv`` are delimited edge lists); anything else is an edge list, whatever its extension
(``.edges``, ``.el``, ``.txt``, ``.edgelist``, none).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import networkx as nx

#: Column names that mark the first line of a delimited edge list as a header.
HEADER_NAMES = frozenset(
    {"source", "target", "from", "to", "src", "dst", "u", "v", "node1", "node2", "id1", "id2"}
)
_SNIFF_BYTES = 4096


class FormatError(ValueError):
    """A file that its format's reader cannot read; ``line`` is 1-based, 0 when unknown."""

    def __init__(self, reason: str, line: int = 0, text: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.text = text


@dataclass(frozen=True)
class Format:
    """One readable format: its name, the extensions that mean it, and its reader."""

    name: str
    extensions: tuple[str, ...]
    read: Callable[[Path, bool], nx.Graph]
    #: Whether the file itself says directed or not (then ``--directed`` cannot change it).
    declares_direction: bool
    about: str


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raw = path.read_bytes()
        line = raw[: err.start].count(b"\n") + 1
        raise FormatError("not UTF-8 text (a binary file?)", line) from None


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _first_bad(lines: Iterable[str], parse: Callable[[str], object]) -> FormatError:
    """The first line ``parse`` rejects, as a FormatError (networkx's errors name no line)."""
    for number, line in enumerate(lines, start=1):
        try:
            parse(line)
        except (TypeError, ValueError, IndexError, SyntaxError, nx.NetworkXError) as err:
            return FormatError(str(err) or type(err).__name__, number, line)
    return FormatError("the file does not parse as a whole")


_KEY_VALUE = re.compile(r"^[A-Za-z_]\w*=\S+$")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _edge_line(line: str) -> str:
    """``u v key=value ...`` (spargo's own edge lists) as networkx's ``u v {dict}``."""
    tokens = _strip_comment(line).split()
    if len(tokens) > 2 and all(_KEY_VALUE.match(t) for t in tokens[2:]):
        pairs = (t.split("=", 1) for t in tokens[2:])
        return f"{tokens[0]} {tokens[1]} {dict((k, _number(v)) for k, v in pairs)!r}"
    return line


def _data_spec(lines: list[str]) -> bool | list[tuple[str, Callable[[str], Any]]]:
    """``parse_edgelist``'s ``data``: a dict per line, or numbered columns (a weight first)."""
    for line in lines:
        tokens = _strip_comment(line).split()
        if len(tokens) <= 2 or tokens[2].startswith("{"):
            continue
        extra = len(tokens) - 2
        names = ["weight", *(f"column{i}" for i in range(4, extra + 3))]
        return [(name, _number) for name in names]
    return True


def read_edgelist(path: Path, directed: bool) -> nx.Graph:
    """``u v`` per line, then nothing, a dict (networkx), ``key=value`` pairs or numbers;
    ``#`` starts a comment anywhere, ``%`` at the start of a line.

    A line with one label declares a node (networkx skips it; we keep it so an isolated node
    is reported as such). Numbers after the labels become ``weight``, ``column4``, ...
    """
    # ``%`` starts a comment line too (KONECT's ``out.*`` files); kept blank so numbers hold.
    lines = ["" if line.lstrip().startswith("%") else _edge_line(line) for line in _lines(path)]
    data = _data_spec(lines)
    create = nx.DiGraph if directed else nx.Graph

    def parse(chunk: list[str]) -> nx.Graph:
        return nx.parse_edgelist(chunk, comments="#", create_using=create, data=data)

    try:
        g = parse(lines)
    except (TypeError, ValueError, IndexError, SyntaxError) as err:
        raise _first_bad(lines, lambda line: parse([line])) from err
    for line in lines:
        tokens = _strip_comment(line).split()
        if len(tokens) == 1:
            g.add_node(tokens[0])
    return g


def _header(row: list[str]) -> bool:
    return len(row) >= 2 and {row[0].strip().lower(), row[1].strip().lower()} <= HEADER_NAMES


def read_delimited(path: Path, directed: bool) -> nx.Graph:
    """A CSV/TSV edge list: an optional header row names the attribute columns.

    Without a header the columns after the two labels are ``weight``, ``column4``, ...
    Cells that parse as numbers become floats, others stay text.
    """
    lines = [line for line in _lines(path) if not line.lstrip().startswith("#")]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    if "\t" in "".join(lines[:5]) and "," not in "".join(lines[:5]):
        delimiter = "\t"
    rows = [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=delimiter)]
    header = rows[0] if rows and _header(rows[0]) else None
    width = max((len(r) for r in rows), default=2)
    names = header[2:] if header else ["weight", *(f"column{i}" for i in range(4, width + 1))]
    body = rows[1:] if header else rows
    spec = [(name, _number) for name in names]
    text = [delimiter.join(r) for r in body if any(r)]
    create = nx.DiGraph if directed else nx.Graph

    def parse(chunk: list[str]) -> nx.Graph:
        return nx.parse_edgelist(chunk, delimiter=delimiter, create_using=create, data=spec)

    try:
        g = parse(text)
    except (TypeError, ValueError, IndexError) as err:
        bad = _first_bad(text, lambda line: parse([line]))
        bad.line += 1 if header else 0  # count the header row back in
        raise bad from err
    g.add_nodes_from(r[0] for r in body if len(r) == 1 and r[0])  # a lone label: a node
    return g


def read_adjlist(path: Path, directed: bool) -> nx.Graph:
    """networkx's adjacency list: a node, then its neighbours, per line."""
    lines = _lines(path)
    create = nx.DiGraph if directed else nx.Graph
    try:
        return nx.parse_adjlist(lines, comments="#", create_using=create)
    except (TypeError, ValueError) as err:
        raise _first_bad(lines, lambda line: nx.parse_adjlist([line])) from err


_AT = re.compile(r"at \((\d+), \d+\)")


def read_gml(path: Path, directed: bool) -> nx.Graph:
    """GML through ``nx.read_gml``: nodes named by ``label``, by ``id`` when labels are absent
    or repeated."""
    _lines(path)  # a binary file fails here with its line, not deep inside the GML lexer
    try:
        try:
            return nx.read_gml(path, label="label")
        except nx.NetworkXError as err:
            if "label" not in str(err):
                raise
            return nx.read_gml(path, label="id")
    except nx.NetworkXError as err:
        found = _AT.search(str(err))
        raise FormatError(str(err), int(found.group(1)) if found else 0) from None


def _xml(reader: Callable[[Path], nx.Graph]) -> Callable[[Path, bool], nx.Graph]:
    def read(path: Path, directed: bool) -> nx.Graph:
        _lines(path)
        try:
            return reader(path)
        except ParseError as err:
            raise FormatError(f"not well-formed XML ({err})", err.position[0]) from None
        except (nx.NetworkXError, ValueError, KeyError, TypeError) as err:
            raise FormatError(str(err) or type(err).__name__) from None

    return read


def read_pajek(path: Path, directed: bool) -> nx.Graph:
    """Pajek ``.net`` (``*Vertices``, then ``*Edges`` or ``*Arcs``) through ``nx.read_pajek``."""
    lines = _lines(path)
    try:
        return nx.parse_pajek(lines)
    except StopIteration:
        raise FormatError("the file ends inside a section (fewer lines than *Vertices N)") from None
    except (TypeError, ValueError, IndexError, KeyError) as err:
        # Pajek lines need their section header, so bisect on prefixes for the first bad one.
        low, high = 0, len(lines)  # lines[:low] parse, lines[:high] do not
        while high - low > 1:
            mid = (low + high) // 2
            try:
                nx.parse_pajek(lines[:mid])
                low = mid
            except StopIteration:  # a section cut short by the prefix, not a bad line
                low = mid
            except (TypeError, ValueError, IndexError, KeyError):
                high = mid
        raise FormatError(str(err) or type(err).__name__, high) from err


def read_node_link(path: Path, directed: bool) -> nx.Graph:
    """Node-link JSON (``nodes`` and ``edges`` or ``links``) through ``nx.node_link_graph``."""
    try:
        data = json.loads("\n".join(_lines(path)))
    except json.JSONDecodeError as err:
        raise FormatError(f"not valid JSON ({err.msg})", err.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise FormatError('node-link JSON needs an object with a "nodes" list', 1)
    edges = "links" if "links" in data and "edges" not in data else "edges"
    data.setdefault(edges, [])
    for key, need in (("nodes", ("id",)), (edges, ("source", "target"))):
        items = data[key]
        if not isinstance(items, list):
            raise FormatError(f'"{key}" must be a list', 1)
        for item in items:
            if not isinstance(item, dict) or any(k not in item for k in need):
                wanted = " and ".join(f'"{k}"' for k in need)
                raise FormatError(f"every entry of {key!r} needs {wanted}, got {item!r}"[:160])
    try:
        return nx.node_link_graph(data, edges=edges)
    except (KeyError, TypeError, ValueError, nx.NetworkXError) as err:
        raise FormatError(f"a node or edge is missing {err} or is not usable") from None


def read_matrix_market(path: Path, directed: bool) -> nx.Graph:
    """Matrix Market ``.mtx`` through ``scipy.io.mmread``: row/column i is node ``i`` (1-based,
    as in the file); entries become ``weight``; a general (non-symmetric) matrix is directed."""
    try:
        from scipy.io import mminfo, mmread
    except ModuleNotFoundError:
        raise FormatError(
            "reading .mtx needs scipy, which the 'sim' extra installs: pip install 'spargo[sim]'"
        ) from None
    lines = _lines(path)
    try:
        rows, cols, _entries, _kind, _field, symmetry = mminfo(str(path))
        matrix = mmread(str(path), spmatrix=False)
    except (ValueError, TypeError, IndexError, OSError) as err:
        raise FormatError(str(err) or type(err).__name__, _first_bad_mtx_line(lines)) from None
    if rows != cols:
        raise FormatError(f"an adjacency matrix must be square, this one is {rows}x{cols}", 1)
    create = nx.Graph if symmetry != "general" and not directed else nx.DiGraph
    g = nx.from_scipy_sparse_array(_sparse(matrix), create_using=create)
    return nx.relabel_nodes(g, {i: i + 1 for i in g.nodes})


def _first_bad_mtx_line(lines: list[str]) -> int:
    """The banner if it is wrong, else the first non-comment line that is not all numbers."""
    if not lines or not lines[0].lower().startswith("%%matrixmarket"):
        return 1
    for number, line in enumerate(lines[1:], start=2):
        tokens = line.split()
        if not tokens or line.startswith("%"):
            continue
        if not all(isinstance(_number(t), float) for t in tokens):
            return number
    return 0


def _sparse(matrix: Any) -> Any:
    from scipy.sparse import coo_array, issparse

    return matrix if issparse(matrix) else coo_array(matrix)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("edgelist", (".edgelist", ".edges", ".el", ".txt"), read_edgelist, False,
               "u v per line; optional weight, key=value pairs or a {dict}"),
        Format("csv", (".csv", ".tsv"), read_delimited, False,
               "delimited edge list; an optional source,target,... header names columns"),
        Format("adjlist", (".adjlist",), read_adjlist, False, "a node, then its neighbours"),
        Format("gml", (".gml",), read_gml, True, "GML"),
        Format("gexf", (".gexf",), _xml(nx.read_gexf), True, "GEXF (Gephi)"),
        Format("pajek", (".net", ".pajek"), read_pajek, True, "Pajek .net"),
        Format("graphml", (".graphml", ".xml"), _xml(nx.read_graphml), True, "GraphML"),
        Format("json", (".json",), read_node_link, True, "node-link JSON"),
        Format("mtx", (".mtx",), read_matrix_market, True, "Matrix Market (scipy)"),
    )
}  # fmt: skip

_CONTENT = (
    (re.compile(r"^\s*%%matrixmarket", re.I), "mtx"),
    (re.compile(r"^\s*\{"), "json"),
    (re.compile(r"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<graphml\b", re.S), "graphml"),
    (re.compile(r"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<gexf\b", re.S), "gexf"),
    (re.compile(r"^(\s*#[^\n]*\n|\s*(Creator|Version)\s[^\n]*\n)*\s*graph\s*\[", re.I), "gml"),
    (re.compile(r"^(\s*%[^\n]*\n)*\s*\*(vertices|network)\b", re.I), "pajek"),
)


def detect(path: Path) -> tuple[str, str]:
    """(format name, how it was chosen: ``content``, ``extension`` or ``default``)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        head = ""
    for pattern, name in _CONTENT:
        if pattern.search(head):
            return name, "content"
    suffix = path.suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.extensions:
            return fmt.name, "extension"
    return "edgelist", "default"


def read_raw(path: Path, name: str, directed: bool) -> nx.Graph:
    """The raw graph of ``path`` read as format ``name`` (a key of :data:`FORMATS`)."""
    return FORMATS[name].read(path, directed)
