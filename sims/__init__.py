"""spargo's in-process network simulator: scenarios, runner, partitions, reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spargo.sims.runner import SimResult, run
    from spargo.sims.scenario import Scenario

__all__ = ["Scenario", "SimResult", "run"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the CLI must not pay for torch.
    if name in ("run", "SimResult"):
        from spargo.sims import runner

        return getattr(runner, name)
    if name == "Scenario":
        from spargo.sims.scenario import Scenario

        return Scenario
    raise AttributeError(name)
