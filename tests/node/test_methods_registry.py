"""The method registry: adding a method is one module and one entry; a method that raises in
``merge`` does not stop the peer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from spargo.node.config import NodeConfig
from spargo.node.errors import ConfigError
from spargo.node.methods import make_method, method_names
from spargo.node.methods.base import Method
from spargo.node.methods.dense import DenseMethod
from spargo.node.methods.payloads import MergeResult, MergeStats, Model, Payload, Received, newest
from spargo.node.methods.registry import METHODS, MethodSpec, registered, sim_methods
from spargo.node.params import load_arrays, to_arrays
from spargo.node.transports.memory import MemoryNetwork
from spargo.sims.scenario import Scenario, ScenarioError, accuracy_basis
from tests.node.harness import make_peers, run_all
from tests.node.test_node import _spread


class PullMethod(Method):
    """Example method: x ← x + α·(mean of the neighbours' models − x). The whole of it."""

    name = "pull"

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        model = Model(to_arrays(self.exchanged()))
        return [(peer, model) for peer in targets]

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        models = newest(received, Model)
        if not models:
            return MergeResult(MergeStats())
        alpha = float(self.options["alpha"])
        own = to_arrays(self.exchanged())
        mixed = {
            name: x + alpha * (np.mean([m.arrays[name] for m, _ in models.values()], axis=0) - x)
            for name, x in own.items()
        }
        load_arrays(self.exchanged(), mixed)
        return MergeResult(MergeStats(merged_peers=len(models)))


PULL = MethodSpec(
    "pull", f"{__name__}:PullMethod", "pull towards the neighbours' mean", {"alpha": 0.5}
)


def test_a_method_added_by_one_registry_entry_runs_everywhere() -> None:
    with registered(PULL):
        assert "pull" in method_names()
        assert "pull" in sim_methods()
        NodeConfig(method="pull")  # the config accepts it
        assert accuracy_basis(Scenario(method="pull", nodes=4, rounds=2)) == "global"
        network = MemoryNetwork()
        nodes = make_peers(network, 4, method="pull", rounds=6)
        run_all(nodes)
    for node in nodes:
        assert [m.merge["merged_peers"] for m in node.history] == [2.0] * 6
        assert node.history[-1].accuracy > 0.7
    assert _spread(nodes) < 0.5
    assert "pull" not in METHODS
    with pytest.raises(ConfigError, match="method 'pull' is unknown"):
        NodeConfig(method="pull")
    with pytest.raises(ScenarioError, match="'pull' is unknown"):
        Scenario(method="pull")


class BrokenMethod(DenseMethod):
    """Dense, except that every merge with anything in it raises."""

    name = "broken"

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        if received:
            raise ValueError("this payload is indigestible")
        return super().merge(round_index, received)


def test_a_method_that_raises_in_merge_does_not_stop_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = MethodSpec("broken", f"{__name__}:BrokenMethod", "raises", METHODS["dense"].defaults)
    caplog.set_level(logging.DEBUG, logger="spargo.node")
    with registered(spec):
        network = MemoryNetwork()
        nodes = make_peers(network, 3, method="broken", rounds=4, graph_spec="complete")
        run_all(nodes)
    for node in nodes:
        assert len(node.history) == 4  # every round ran to its end
        assert node.counters.drops["merge_error"] == 4 * 2  # two payloads a round, dropped
        assert node.history[-1].merge["merged_peers"] == 0.0  # the failed merge took nothing
    # Logged once per peer with the senders and the traceback; later failures at debug.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(warnings) == [
        "p0: merge of round 0 failed on payloads from p1, p2",
        "p1: merge of round 0 failed on payloads from p0, p2",
        "p2: merge of round 0 failed on payloads from p0, p1",
    ]
    assert all(r.exc_info for r in caplog.records if r.levelno == logging.WARNING)


def test_simulation_only_methods_need_the_simulator() -> None:
    assert METHODS["allreduce"].simulation_only
    assert "allreduce" not in method_names()
    with pytest.raises(ConfigError, match="use one of"):
        NodeConfig(method="allreduce")
    with pytest.raises(ValueError, match="only in the simulator"):
        make_method("allreduce", None)  # type: ignore[arg-type]


def test_methods_import_no_wire_types() -> None:
    """The seam: nothing under node/methods imports spargo.protocol (node.payload maps)."""
    import ast
    from pathlib import Path

    import spargo.node.methods as package

    for path in Path(package.__path__[0]).glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("spargo.protocol") for n in names), (path.name, names)
