"""``--device``: the batched engine's torch device (cpu, cuda, cuda:N).

Checks the one-line errors (a malformed value, the node engine, no CUDA GPU visible, a GPU
number torch does not see), that ``--device cpu`` computes exactly what the default does, and
guards ``sims/batched*.py`` statically: every torch tensor constructor names its ``device=``
(or carries a ``# cpu:`` comment saying why it is deliberately on the CPU), so no edit can
silently leave a tensor on the wrong device; and at run time (a ``TorchFunctionMode``) that no
tensor turns into a numpy array implicitly, no numpy array enters a torch op, and only the
node's CPU draws build a tensor without a device. The CUDA comparison (``-k cuda``) runs only where
torch sees a GPU: ``pytest tests/sims/test_batched_device.py -k cuda``.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from spargo.sims import run
from spargo.sims.runner import SimResult
from spargo.sims.scenario import ScenarioError
from tests.sims.conftest import assert_one_line_error, small

SIMS = Path(__file__).resolve().parents[2] / "sims"
FAST = ["--nodes", "4", "--topology", "ring", "--task", "synthetic", "--rounds", "1"]
#: torch functions that create a tensor (or a generator) on a device of their choosing.
CONSTRUCTORS = {
    "zeros", "ones", "empty", "full", "arange", "eye", "rand", "randn", "randint", "randperm",
    "linspace", "as_tensor", "tensor", "sparse_coo_tensor", "sparse_csr_tensor", "from_numpy",
    "Generator",
}  # fmt: skip
#: Summary keys that measure wall-clock time (they differ between any two runs).
WALL = {"wall_s", "wall_train_s", "wall_gossip_s", "wall_eval_s"}
NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="this torch sees a CUDA GPU")
def test_cuda_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*FAST, "--engine", "batched", "--device", "cuda"]
    assert_one_line_error(argv, "no CUDA GPU is visible to torch", lambda: capsys.readouterr().err)
    argv[-1] = "cuda:0"
    assert_one_line_error(argv, "use --device cpu", lambda: capsys.readouterr().err)
    if torch.version.cuda is None:
        with pytest.raises(ScenarioError, match="CPU-only build"):
            small(engine="batched", device="cuda")


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", "cpu:0", ""])
def test_a_malformed_device_is_one_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*FAST, "--engine", "batched", "--device", value]
    needle = "--device must be cpu, cuda or cuda:N"
    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)


def test_a_device_needs_the_batched_engine(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*FAST, "--device", "cuda"]
    needle = "--device needs --engine batched"
    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)
    with pytest.raises(ScenarioError, match=needle):
        small(engine="node", device="cuda:0")
    with pytest.raises(ScenarioError, match="--device must be"):
        small(device=0)


def test_a_gpu_number_beyond_those_torch_sees_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ScenarioError, match=r"torch sees 2 CUDA GPU\(s\), numbered 0\.\.1"):
        small(engine="batched", device="cuda:2")


def test_the_cpu_device_check_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from spargo.sims.scenario import Scenario\n"
        "Scenario(device='cpu')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def _same(a: SimResult, b: SimResult) -> None:
    """Bit-identical runs: every per-peer record, every row, the summary but wall time."""
    assert a.rounds == b.rounds
    assert a.round_stats == b.round_stats
    assert {k: v for k, v in a.summary.items() if k not in WALL} == {
        k: v for k, v in b.summary.items() if k not in WALL
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "dense", "loss": 0.3},
        {"method": "choco", "method_options": {"compressor": "randk"}},
        {"method": "spafl", "method_options": {"weights_every": 2, "alpha": 2.0}},
        {"method": "cgt_masked"},
    ],
    ids=["dense-loss", "choco-randk", "spafl", "cgt_masked"],
)
def test_device_cpu_is_the_default_exactly(fields: dict[str, Any]) -> None:
    base = {"engine": "batched", "rounds": 3, **fields}
    default = run(small(**base))
    assert small(**base).device == "cpu"
    _same(default, run(small(device="cpu", **base)))


def test_the_flag_reaches_the_run(tmp_path: Path) -> None:
    from spargo.cli import main

    out = tmp_path / "run"
    argv = ["sim", *FAST, "--engine", "batched", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["scenario"]["device"] == "cpu"


def _unplaced(path: Path) -> list[str]:
    """The torch constructor calls in ``path`` with neither ``device=`` nor ``# cpu:``."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if node.func.attr not in CONSTRUCTORS or not (
            isinstance(owner, ast.Name) and owner.id == "torch"
        ):
            continue
        if any(k.arg == "device" for k in node.keywords):
            continue
        span = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
        if not any("# cpu:" in line for line in span):
            found.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_every_batched_tensor_constructor_names_its_device() -> None:
    files = sorted(SIMS.glob("batched*.py"))
    assert len(files) >= 10  # the guard looks where the engine is
    unplaced = [hit for path in files for hit in _unplaced(path)]
    assert not unplaced, "add device= (or a '# cpu: why' comment):\n" + "\n".join(unplaced)


def test_the_guard_catches_a_tensor_without_a_device(tmp_path: Path) -> None:
    bad = tmp_path / "batched_bad.py"
    bad.write_text(
        "import torch\n"
        "a = torch.zeros(3)\n"
        "b = torch.as_tensor([1], device=d)\n"
        "c = torch.Generator()  # cpu: drawn as the node draws\n"
        "e = torch.zeros_like(b)\n"
        "f = torch.sparse_coo_tensor(\n    i, v, (2, 2)\n)\n"
    )
    assert [hit.split(":")[1] for hit in _unplaced(bad)] == ["2", "6"]


#: Functions that draw on the CPU on purpose (the node engine's numbers), then move the draws.
CPU_DRAWS = {"batch_indices", "randk_indices", "topk"}


class _Crossings:
    """A ``TorchFunctionMode`` body: records each torch call that would break or copy on a
    GPU — a tensor turned into a numpy array implicitly (``__array__``), a numpy array given
    to a torch op other than indexing, a constructor without ``device=`` outside the
    deliberate CPU draws — with the innermost ``sims/batched*`` line that led to it."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def check(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import numpy as np

        name = getattr(func, "__name__", str(func))
        given = [*args, *kwargs.values()]
        implicit = name == "__array__" or (
            name not in {"__getitem__", "__setitem__", "as_tensor", "tensor"}
            and any(isinstance(a, np.ndarray) for a in given)
        )
        unplaced = name in CONSTRUCTORS and "device" not in kwargs
        if not (implicit or unplaced):
            return
        stack = traceback.extract_stack()
        if unplaced and any(frame.name in CPU_DRAWS for frame in stack):
            return
        ours = [f for f in stack if Path(f.filename).name.startswith("batched")]
        if ours:
            self.found.add(f"{name} at {Path(ours[-1].filename).name}:{ours[-1].lineno}")


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "dense", "loss": 0.3},
        {"method": "vc", "method_options": {"mix": "beta", "beta": 0.3}},
        {"method": "pushsum"},
        {"method": "pushsum_rs"},
        {"method": "choco", "loss": 0.3, "method_options": {"compressor": "randk"}},
        {"method": "fedsparsify", "method_options": {"t0": 0, "s_final": 0.8}},
        {"method": "spafl", "churn": 0.2, "churn_downtime": 1},
        {"method": "cgt_masked"},
        {"method": "allreduce"},
    ],
    ids=lambda f: str(f["method"]),
)
def test_a_run_crosses_to_numpy_only_explicitly(fields: dict[str, Any]) -> None:
    """At run time: no implicit tensor-to-numpy conversion (on a GPU: an error), no numpy
    array into a torch op (a CPU tensor beside GPU ones) and no constructor without a
    device in the batched modules or what they call, but the node's CPU draws."""
    from torch.overrides import TorchFunctionMode

    crossings = _Crossings()

    class Watch(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
        ) -> Any:
            crossings.check(func, args, kwargs or {})
            return func(*args, **(kwargs or {}))

    scenario = small(engine="batched", rounds=3, eval_peers=3, eval_all_every=2, **fields)
    with Watch():
        run(scenario)
    assert not crossings.found, sorted(crossings.found)


#: The GPU comparison's cases: 16 peers × 3 rounds each.
CUDA_CASES: dict[str, dict[str, Any]] = {
    "dense": {"method": "dense"},
    "choco": {"method": "choco"},
    "spafl": {"method": "spafl", "method_options": {"weights_every": 2, "alpha": 2.0}},
    "tracking": {"method": "tracking"},
    "loss30": {"method": "vc", "loss": 0.3},
}


@pytest.mark.skipif(NO_GPU, reason="no CUDA GPU visible to torch (run -k cuda on a GPU machine)")
@pytest.mark.parametrize("case", sorted(CUDA_CASES))
def test_cuda_equals_cpu(case: str) -> None:
    base = {"engine": "batched", "nodes": 16, "rounds": 3, "topology": "smallworld"}
    fields = {**base, **CUDA_CASES[case]}
    cpu, gpu = run(small(**fields)), run(small(device="cuda", **fields))
    reference = {(m.peer_id, m.round): m for m in cpu.rounds}
    assert len(reference) == len(gpu.rounds)
    for m in gpu.rounds:
        ref = reference[(m.peer_id, m.round)]
        for key in ("accuracy", "global_accuracy"):
            a, b = getattr(ref, key), getattr(m, key)
            assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-4, (m.peer_id, key)
        for key in ("bytes_sent", "bytes_received", "messages_sent", "messages_received"):
            assert getattr(m, key) == getattr(ref, key), (m.peer_id, m.round, key)
    for ref_row, row in zip(cpu.round_stats, gpu.round_stats, strict=True):
        for key in ("accuracy_mean", "global_accuracy_mean", "local_accuracy_mean"):
            assert abs(ref_row[key] - row[key]) <= 1e-4, (row["round"], key)
        assert row["bytes_sent_total"] == ref_row["bytes_sent_total"]
    for key in ("bytes_sent_total", "messages_sent_total"):
        if key in cpu.summary:
            assert gpu.summary[key] == cpu.summary[key], key
