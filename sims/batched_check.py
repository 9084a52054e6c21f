"""What the batched engine runs, checked when a scenario is built, and the options it uses.

``check_batched`` turns anything ``sims.batched`` cannot compute exactly as the node engine
does into a one-line ``ScenarioError`` (never a silently different run); ``method_options``
resolves a method's options as the node does, by building the node's own method on a probe
MLP (its registry defaults, its checks, its messages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spargo.sims.scenario import Scenario, ScenarioError

if TYPE_CHECKING:
    from spargo.node.methods.base import Method

#: Methods the batched engine runs.
BATCHED_METHODS = (
    "dense", "vc", "pushsum", "choco", "fedsparsify", "spafl", "allreduce", "local",
    "pushsum_rs", "tracking", "cgt", "cgt_masked",
)  # fmt: skip
#: Methods the batched engine runs under loss, partitions and device speeds but not churn
#: (a frozen peer's correction, step count or running sums would need the churn semantics
#: of ``sims.batched_faults_churn`` written for them).
NO_CHURN = ("choco", "pushsum_rs", "tracking", "cgt", "cgt_masked")
#: Fault fields the batched engine does not run, with their fault-free values (loss,
#: partitions, churn and device speeds it runs as masks: ``sims.batched_faults*``).
_REFUSED: dict[str, object] = {
    "attack": None, "attackers": 0.0, "latency_ms": 0.0, "jitter_ms": 0.0,
    "bandwidth_mbps": 0.0, "latency_from": None, "faults": (),
}  # fmt: skip
#: Why each refused fault needs the node engine (the ScenarioError's reason).
_WHY = {
    "attack": "attacks", "attackers": "attacks", "latency_ms": "link delays",
    "jitter_ms": "link delays", "bandwidth_mbps": "link delays", "latency_from": "link delays",
    "faults": "fault objects",
}  # fmt: skip


def check_device(device: object, engine: str) -> None:
    """``--device`` (``Scenario.device``): ``cpu`` (torch is not imported), ``cuda`` or
    ``cuda:N`` with a CUDA GPU that torch sees (N below its device count); otherwise a one-line
    ``ScenarioError`` naming the flag and the valid forms, the node engine, or torch's build."""
    text = device if isinstance(device, str) else ""
    kind, _, number = text.partition(":")
    if text == "cpu":
        return
    if kind != "cuda" or (number and not number.isdigit()) or text.endswith(":"):
        raise ScenarioError(f"--device must be cpu, cuda or cuda:N (N = 0, 1, ...), got {device!r}")
    if engine != "batched":
        raise ScenarioError("--device needs --engine batched")
    import torch

    if not torch.cuda.is_available():
        build = (
            "a CPU-only build: torch.version.cuda is None"
            if torch.version.cuda is None
            else f"built for CUDA {torch.version.cuda}"
        )
        raise ScenarioError(
            f"--device {text}: no CUDA GPU is visible to torch {torch.__version__} "
            f"({build}); use --device cpu"
        )
    count = torch.cuda.device_count()
    if number and int(number) >= count:
        raise ScenarioError(
            f"--device {text}: torch sees {count} CUDA GPU(s), numbered 0..{count - 1}"
        )


def check_batched(scenario: Scenario) -> None:
    """Raise a one-line ``ScenarioError`` for anything the batched engine cannot run."""
    s = scenario
    if s.method not in BATCHED_METHODS:
        raise ScenarioError(
            f"--engine batched runs methods {', '.join(BATCHED_METHODS)}; not {s.method!r}: "
            "use --engine node"
        )
    if s.mode != "rounds":
        raise ScenarioError("--engine batched runs --mode rounds only; use --engine node")
    for name, clean in _REFUSED.items():
        if getattr(s, name) != clean:
            flag = name.replace("_", "-")
            raise ScenarioError(
                f"--engine batched runs loss, partitions, churn and device speeds, not "
                f"{_WHY[name]}; --{flag} needs --engine node"
            )
    _check_churn(s)
    if s.method in ("choco", "cgt", "cgt_masked") and s.sampler.strip() != "all":
        raise ScenarioError(
            f"--engine batched runs {s.method} with --sampler all only (not {s.sampler!r}); "
            "use --engine node"
        )
    options = method_options(s)
    robust = options.get("robust", "none")
    if robust != "none":
        raise ScenarioError(
            f"--engine batched runs {s.method} with robust=none only, not {robust!r}; "
            "use --engine node"
        )


def method_options(s: Scenario) -> dict[str, Any]:
    """The method's options as the node resolves them: its registry defaults
    (``MethodSpec.defaults``) overridden by ``s.method_options`` and checked by the node
    method's own constructor, built once on a two-layer probe MLP (so every check and every
    message is the node's); FedSparsify's and ``cgt_masked``'s ``t0``/``t_end`` resolved
    against ``s.rounds``.
    A wrong option is a one-line ``ScenarioError``."""
    from spargo import sparse
    from spargo.node.methods.cgt_masked import MaskedCompressedTrackingMethod
    from spargo.node.methods.fedsparsify import FedSparsifyMethod

    try:
        method = _probe(s)
    except (ValueError, sparse.SparseError) as exc:
        raise ScenarioError(str(exc)) from None
    options = dict(method.options)
    if isinstance(method, FedSparsifyMethod | MaskedCompressedTrackingMethod):
        options["t0"], options["t_end"] = method.t0, method.t_end
    return options


def _probe(s: Scenario) -> Method:
    """The node's method for ``s`` on a tiny MLP (its constructor checks the options);
    ``allreduce`` without its simulator hub (its constructor only keeps it)."""
    from torch import nn

    from spargo.node.methods.base import MethodContext
    from spargo.node.methods.registry import method_spec

    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    ctx = MethodContext(model, "probe", {}, seed=s.seed, rounds=s.rounds, options=s.method_options)
    if s.method == "allreduce":
        from spargo.sims.allreduce import AllReduceMethod

        return AllReduceMethod(ctx, hub=None)  # type: ignore[arg-type]
    return method_spec(s.method).load()(ctx)


def _check_churn(s: Scenario) -> None:
    """Churn runs alone (no loss, partition or device speeds: the batched engine's churn has
    no deadlines to wait out) and not for ``NO_CHURN`` (``sims.batched_faults_churn``)."""
    if s.churn == 0 and not s.churn_events:
        return
    timed = [
        flag
        for flag, on in (
            ("--loss", s.loss > 0),
            ("--partition-at", s.partition_at is not None),
            ("--step-time-s", s.step_time_s > 0),
        )
        if on
    ]
    if timed:
        raise ScenarioError(
            f"--engine batched runs churn without {timed[0]} (its churn has no deadlines to "
            "wait out); use --engine node"
        )
    if s.method in NO_CHURN:
        why = {
            "choco": "a rejoining peer's public copies need a resync",
            "pushsum_rs": "a leaving peer's running sums are not mirrored",
            "tracking": "a leaving peer's correction is not mirrored",
            "cgt": "a leaving peer's correction and copies are not mirrored",
            "cgt_masked": "a leaving peer's correction and copies are not mirrored",
        }[s.method]
        raise ScenarioError(
            f"--engine batched runs {s.method} without churn ({why}); use --engine node"
        )
