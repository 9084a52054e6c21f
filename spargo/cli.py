"""The ``spargo`` command (console script and ``python -m spargo``): one parser, five tools.

``sim`` and ``topology`` are the researcher's tools, ``node``, ``lab`` and ``monitor`` the real
network's. Each subcommand imports its heavy modules (torch, the node, plotting) only when it
runs, so ``spargo --help`` and ``spargo --version`` start fast and an edge install (no
extras) still parses every command. Errors are one line, ``spargo <cmd>: error: ...``, exit 2;
a module from an extra that is not installed names the extra to install.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import spargo

#: Each extra (pyproject.toml, [project.optional-dependencies]) and the modules it brings.
EXTRAS: dict[str, frozenset[str]] = {
    "sim": frozenset({"matplotlib", "rich", "sklearn", "scipy"}),
    "monitor": frozenset({"rich"}),
    "uvloop": frozenset({"uvloop"}),
    "tensorboard": frozenset({"tensorboard"}),
    "mlflow": frozenset({"mlflow"}),
    "web": frozenset({"starlette", "uvicorn", "websockets"}),
    "ray": frozenset({"ray"}),
}
#: The extra to name first when a command misses a module.
_COMMAND_EXTRA = {"sim": "sim", "topology": "sim", "monitor": "monitor", "lab": "monitor"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


#: Each command and the module that defines it (``add_parser(subparsers)`` and ``run(args)``).
COMMANDS: dict[str, str] = {
    "sim": "spargo.sims.cli",
    "topology": "spargo.topology.cli",
    "node": "spargo.node.peer",
    "lab": "spargo.node.lab",
    "monitor": "spargo.node.monitor",
    "keys": "spargo.node.keys",
}


def _module(command: str) -> Any:
    import importlib

    return importlib.import_module(COMMANDS[command])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line ``spargo {sim,topology,node,lab,monitor} ...``.

    With ``command`` given, only that command's module is imported and registered (start-up
    time and memory are the user's); without, all of them (the overview, ``--help``).
    """
    parser = _Parser(
        prog="spargo",
        description="Decentralized gossip learning of sparse models.",
        epilog="Run 'spargo sim' for the main job (16 simulated peers); "
        "'spargo COMMAND --help' for a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"spargo {spargo.__version__}")
    subparsers = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for name in COMMANDS if command is None else (command,):
        _module(name).add_parser(subparsers)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named first in ``argv`` (options before it are the top level's)."""
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def missing_extra(command: str, module: str) -> str | None:
    """The extra that installs ``module`` (top-level name), preferring ``command``'s own."""
    top = module.partition(".")[0]
    preferred = _COMMAND_EXTRA.get(command)
    if preferred is not None and top in EXTRAS[preferred]:
        return preferred
    return next((extra for extra, mods in EXTRAS.items() if top in mods), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spargo`` console script; returns the exit status."""
    from spargo.node.errors import NodeError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # answered without importing any command
        print(f"spargo {spargo.__version__}")
        return 0
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_module(args.command).run(args))
    except KeyboardInterrupt:
        print(f"spargo {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        extra = missing_extra(args.command, exc.name or "")
        if extra is None:
            raise
        print(
            f"spargo {args.command}: error: needs the module {exc.name!r}, which the "
            f"'{extra}' extra installs: pip install 'spargo[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, OSError, NodeError) as exc:
        print(f"spargo {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a stalled simulation or a dead sweep worker: our bug
        print(
            f"spargo {args.command}: internal error: {_one_line(exc)} "
            "(please report it with the command line and seed)",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
