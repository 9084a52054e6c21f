"""``spargo topology NAME --nodes N`` or ``spargo topology FILE``: summarise, optionally draw.

For a graph file it reports what was read: the format and how it was chosen, nodes, edges,
directedness, the node and edge attributes found, and which of them spargo uses.

The lead's ``spargo`` entry point registers :func:`add_parser` and dispatches to :func:`run`;
``python -m topology.cli`` runs the same command on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from spargo.topology.errors import TopologyError
from spargo.topology.factory import make_graph
from spargo.topology.files import HOW
from spargo.topology.formats import FORMATS
from spargo.topology.geo import parse_latency_from, with_geo_latency
from spargo.topology.summary import describe, draw

PROG = "spargo topology"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        help="ring, line, star, complete, grid[:RxC], torus[:RxC], hypercube, regular:D, "
        "er:P, smallworld[:K:P], ba:M, exponential, or a graph file (edge list, CSV/TSV, "
        "adjlist, GML, GEXF, Pajek, GraphML, node-link JSON, Matrix Market)",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=list(FORMATS),
        metavar="NAME",
        default=None,
        help=f"the graph file's format: {', '.join(FORMATS)} (default: detected from "
        "content and extension)",
    )
    parser.add_argument(
        "--directed",
        action="store_true",
        help="read an edge list or adjacency list as arcs (files that say so are directed)",
    )
    parser.add_argument(
        "--latency-from",
        metavar="geo[:KM_PER_MS]",
        default=None,
        help="set each link's latency from its ends' latitude/longitude (default 200 km/ms)",
    )
    parser.add_argument(
        "--nodes", "-n", type=int, default=None, help="number of peers (not for files)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random graphs (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--png", metavar="FILE", default=None, help="draw the graph to FILE")


def add_parser(subparsers: Any) -> None:
    """Register the ``topology`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "topology",
        help="summarise a topology: degrees, diameter, spectral gap, rounds to consensus",
        description="Summarise a gossip topology and optionally draw it.",
    )
    _add_arguments(parser)


def _file_lines(info: dict[str, Any] | None) -> list[str]:
    if info is None:
        return []
    return [
        f"format              {info['format']} ({HOW[info['detected_by']]})",
        f"node attributes     {', '.join(info['node_attributes']) or '-'}",
        f"edge attributes     {', '.join(info['edge_attributes']) or '-'}",
        f"used by spargo      {', '.join(info['used']) or '-'}",
    ]


def _format(name: str, summary: dict[str, Any]) -> str:
    gap = "spectral gap (MH)" if summary["mixing"] == "metropolis" else "spectral gap (push)"
    arcs = summary["one_way_arcs"]
    directed = f"yes, {arcs} one-way arcs" if arcs else "yes, every arc both ways"
    return "\n".join(
        [
            f"topology            {name}",
            *_file_lines(summary.get("file")),
            f"nodes               {summary['nodes']}",
            f"{'arcs' if summary['directed'] else 'edges':<20}{summary['edges']}",
            f"directed            {directed if summary['directed'] else 'no'}",
            f"degree min/mean/max {summary['degree_min']} / {summary['degree_mean']:.3g} / "
            f"{summary['degree_max']}",
            f"diameter            {summary['diameter']}",
            f"{gap:<20}{summary['spectral_gap']:.6g}",
            f"rounds to 1e-3      {summary['rounds_to_consensus']}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.name``; on bad input one error line on stderr, exit 2."""
    try:
        g = make_graph(args.name, args.nodes, args.seed, fmt=args.fmt, directed=args.directed)
        if args.latency_from:
            g = with_geo_latency(g, parse_latency_from(args.latency_from))
            g.graph["file"]["used"] = sorted({*g.graph["file"]["used"], "latency_ms"})
        summary = describe(g)
        if "file" in g.graph:
            summary["file"] = g.graph["file"]
        if args.png:
            draw(g, args.png, title=f"{args.name} (n={g.number_of_nodes()})")
    except (TopologyError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"topology": args.name, **summary}, sort_keys=True))
    else:
        print(_format(args.name, summary))
        if args.png:
            print(f"drawing             {args.png}")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Reports a usage error as one line, like :func:`run` reports bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m topology.cli NAME --nodes N ...``."""
    parser = _OneLineParser(prog=PROG, description="Summarise a gossip topology.")
    _add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help or a usage error: hand back the code, do not exit
        return int(done.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
