"""The ``spargo`` command: ``sim`` (default job), ``topology``, and the real-network tools.

Heavy modules (torch, the node) are imported inside the subcommand that needs them, so
``spargo --help`` and ``spargo topology`` start fast. Any configuration error is printed as
one line ``spargo <cmd>: error: ...`` and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_sim_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sim",
        help="simulate N peers in one process (the default job)",
        description="Run N real peers on in-memory transports on a virtual clock.",
    )
    p.add_argument("--config", help="scenario TOML file; flags override its values")
    p.add_argument("--nodes", type=int, help="number of peers (default 16)")
    p.add_argument("--topology", help="ring, smallworld, regular:4, er:0.2, ... or a graph file")
    p.add_argument("--method", help="dense, vc, spafl, fedsparsify, choco, allreduce")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, repeatable (e.g. --option weights_every=3)",
    )
    p.add_argument("--rounds", type=int, help="gossip rounds")
    p.add_argument("--local-steps", type=int, help="local SGD steps per round")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--task", help="digits, synthetic, mnist:PATH or module:function")
    p.add_argument("--partition", help="iid, dirichlet:ALPHA, shards:K")
    p.add_argument("--sampler", help="all, random:K, exponential")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--distinct-init",
        action="store_true",
        default=None,
        help="start every peer from its own random model",
    )
    p.add_argument("--eval-every", type=int, help="evaluate every K rounds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    p.add_argument("--quiet", action="store_true", help="no per-round progress lines")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option {text!r} must look like KEY=VALUE (e.g. weights_every=3)")
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    return key, raw


def _scenario_from_args(args: argparse.Namespace) -> Any:
    from node.config import load_toml
    from sims.scenario import Scenario, scenario_from_mapping

    base: dict[str, Any] = {}
    if args.config:
        base = dict(load_toml(args.config))
    flags = {
        "nodes": args.nodes,
        "topology": args.topology,
        "method": args.method,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "task": args.task,
        "partition": args.partition,
        "sampler": args.sampler,
        "seed": args.seed,
        "distinct_init": args.distinct_init,
        "eval_every": args.eval_every,
    }
    base.update({k: v for k, v in flags.items() if v is not None})
    if args.method is not None and args.method != Scenario.method and not args.option:
        base.setdefault("method_options", {})
    if args.option:
        options = dict(base.get("method_options", {}))
        options.update(_parse_option(o) for o in args.option)
        base["method_options"] = options
    _resolve_nodes_from_graph_file(base)
    return scenario_from_mapping(base, source=args.config or "flags")


def _resolve_nodes_from_graph_file(values: dict[str, Any]) -> None:
    import topology

    spec = values.get("topology")
    if spec is None:
        return
    size = topology.graph_size_from_spec(spec)
    if size is not None and values.get("nodes") is None:
        values["nodes"] = size


def run_sim(args: argparse.Namespace) -> int:
    """``spargo sim``: run a scenario, print progress, a summary and optionally JSON."""
    scenario = _scenario_from_args(args)
    from sims.runner import run

    def progress(round_index: int, metrics: list[Any]) -> None:
        if args.quiet:
            return
        acc = [m.global_accuracy if m.global_accuracy is not None else m.accuracy for m in metrics]
        acc = [a for a in acc if a == a]
        sent = sum(m.bytes_sent for m in metrics)
        mean = sum(acc) / len(acc) if acc else float("nan")
        print(
            f"round {round_index + 1:>3}/{scenario.rounds}  accuracy {mean:6.3f}  "
            f"density {sum(m.density for m in metrics) / len(metrics):5.3f}  "
            f"sent {sent / 1e6:8.2f} MB",
            flush=True,
        )

    result = run(scenario, on_round=progress)
    s = result.summary
    print(
        f"{s['nodes']} peers, {s['topology']}, {s['method']}, {s['rounds']} rounds: "
        f"accuracy mean {s['accuracy_mean']:.3f} (min {s['accuracy_min']:.3f}, "
        f"max {s['accuracy_max']:.3f}, {s['accuracy_on']}), density {s['density']:.3f}, "
        f"{s['bytes_sent_total'] / 1e6:.2f} MB in {s['messages_sent']} messages, "
        f"{s['messages_dropped']} dropped, {s['wall_s']:.1f} s"
    )
    if args.json:
        print(json.dumps(s, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spargo", description="Gossip learning of sparse models.")
    subparsers = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_sim_parser(subparsers)
    import topology.cli

    topology.cli.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spargo`` console script."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv) or ["sim"])
    handlers = {"sim": run_sim}
    try:
        if args.command == "topology":
            import topology.cli

            return topology.cli.run(args)
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"spargo {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as exc:
        print(f"spargo {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
