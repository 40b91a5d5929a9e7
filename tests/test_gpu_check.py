"""benchmarks/gpu_check.py: its dry run on any machine, the full check where CUDA is present.

The dry run runs the script's whole code path (building, eager and compiled decoding through
``ModelRunner``, the bandwidth limit, the routed ``StepEngine`` run) on tiny models with the real
Qwen vocabulary; about 25-50 s here, most of it one torch.compile of the tiny SRM on the CPU.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

# model, ctx, eager, compiled, limit, eager/limit, compiled/limit, then the target column
ROW = re.compile(
    r"^(srm|lrm)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+<=[\d.]+x: (.*)$", re.M
)
ROUTED = re.compile(
    r"^routed run: wall ([\d.]+) s, ideal ([\d.]+) s \(decode ([\d.]+) \+ prefills ([\d.]+)\), "
    r"wall/ideal ([\d.]+)$",
    re.M,
)


def run_check(*args: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def rows_of(out: str) -> dict[tuple[str, int], tuple[str, ...]]:
    return {(m[0], int(m[1])): m[2:] for m in ROW.findall(out)}


def check_row(cells: tuple[str, ...], *, compiled: bool) -> None:
    eager, comp, limit, eager_ratio, comp_ratio, _ = cells
    assert float(eager) > 0 and float(limit) > 0
    assert math.isclose(float(eager_ratio), float(eager) / float(limit), abs_tol=0.01)
    if compiled:
        assert float(comp) > 0
        assert math.isclose(float(comp_ratio), float(comp) / float(limit), abs_tol=0.01)
    else:
        assert comp == comp_ratio == "-"


def check_routed(out: str) -> None:
    match = ROUTED.search(out)
    assert match, out
    wall, ideal, decode, prefills, ratio = map(float, match.groups())
    assert wall > 0 and decode > 0 and prefills > 0
    assert math.isclose(ideal, decode + prefills, abs_tol=0.002)
    assert math.isclose(ratio, wall / ideal, abs_tol=0.01)


def test_dry_run_prints_the_table_for_both_models_and_the_routed_run():
    out = run_check("--dry-run", timeout=300)
    assert "figures are from a dry run, not a GPU" in out
    rows = rows_of(out)
    assert set(rows) == {("srm", 64), ("srm", 256), ("lrm", 64), ("lrm", 256)}, out
    for (model, _), cells in rows.items():
        check_row(cells, compiled=model == "srm")  # the dry run compiles the SRM only
        target = cells[-1]
        assert target.startswith("(dry run)" if model == "srm" else "not compiled")
        if model == "srm":  # fp32: compiled greedy tokens equal eager ones on the same cache
            assert re.search(r"match \(8\)\s+match \(8\)$", target), target
    # The package's first-call check accepted the compiled logits (fp32, CPU).
    assert "compile: compiled (default), first call matched eager" in out
    assert "graphs compiled during timing: 0" in out
    check_routed(out)
    assert re.search(r"routed run: 4 srm, 1 lrm steps, \d+ tokens written", out)
    check_batched(out, roles=("srm", "lrm"), levels=(1, 2, 4))


BATCHED = re.compile(
    r"^(srm|lrm) batch +(\d+) runs: +([\d.]+) tokens/s  x([\d.]+) vs one run$", re.M
)


def check_batched(out: str, *, roles: tuple[str, ...], levels: tuple[int, ...]) -> None:
    found = BATCHED.findall(out)
    assert [(m[0], int(m[1])) for m in found] == [(r, n) for r in roles for n in levels], out
    for role in roles:
        rates = [float(m[2]) for m in found if m[0] == role]
        ratios = [float(m[3]) for m in found if m[0] == role]
        assert all(r > 0 for r in rates) and ratios[0] == 1.0
        assert all(
            math.isclose(x, r / rates[0], abs_tol=0.01) for x, r in zip(ratios, rates, strict=True)
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_check_on_cuda():
    out = run_check(timeout=900)
    assert "DRY RUN" not in out
    rows = rows_of(out)
    for context in (1024, 8192):
        check_row(rows[("srm", context)], compiled=True)
    if "lrm: SKIPPED" in out:  # less free memory than the 32B model needs: said, not failed
        assert "routed run: SKIPPED" in out
        return
    for context in (1024, 8192):
        check_row(rows[("lrm", context)], compiled=True)
    check_routed(out)
    check_batched(out, roles=("srm", "lrm"), levels=(1, 2, 4, 8, 16))
