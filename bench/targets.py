"""What the benchmark ran on, and the performance targets checked against one round's cells.

Absolute figures move 2x-6x between CPUs, so every target is a ratio to a reference measured in
the same round, and the CPU is named beside it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

from bench.cells import Cell, find

# Instruction sets that decide how fast the model and the image code run.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")

PNG, JPEG = "28x28 PNG", "800x600 JPEG"
CEILING = "HTTP ceiling"  # One worker: the reference of every target.


def cpu_description() -> str:
    """`lscpu`'s model name, the cores, and which of FLAGS_OF_INTEREST the CPU has."""
    model, flags = platform.processor() or "unknown CPU", set[str]()
    if shutil.which("lscpu"):
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        if found := re.search(r"^Model name:\s*(.+)$", output, re.MULTILINE):
            model = found.group(1).strip()
        if found := re.search(r"^Flags:\s*(.+)$", output, re.MULTILINE):
            flags = set(found.group(1).split())
    present = [flag for flag in FLAGS_OF_INTEREST if flag in flags]
    return f"{model}, {os.cpu_count()} cores; {' '.join(present) or 'no AVX2'}"


@dataclass(frozen=True)
class TargetResult:
    target: str
    measured: str
    met: bool | None  # None: a cell it needs was not measured.


def check(cells: list[Cell]) -> list[TargetResult]:
    results = [
        _throughput(cells, PNG, 0.8),
        _throughput(cells, JPEG, 0.5),
        _lone_request(cells, 2.5),
    ]
    ours = [cell for cell in cells if cell.server.startswith("cnn-serve")]
    errors = sum(cell.errors for cell in ours)
    measured = f"{errors} in {len(ours)} cells"
    if errors:
        worst = max(ours, key=lambda cell: cell.errors)
        measured += f" (most: {worst.server}, {worst.payload} {worst.body} c={worst.concurrency})"
    results.append(
        TargetResult("no error in any cnn-serve cell", measured, errors == 0 if ours else None)
    )
    return results


def _throughput(cells: list[Cell], payload: str, at_least: float) -> TargetResult:
    target = f"{payload}, c=64: cnn-serve >= {at_least}x the 1-worker HTTP ceiling"
    ours, ceiling = (
        find(cells, server, payload, "multipart", 64) for server in ("cnn-serve", CEILING)
    )
    if ours is None or ceiling is None or not ceiling.requests_per_s:
        return TargetResult(target, "not measured", None)
    ratio = ours.requests_per_s / ceiling.requests_per_s
    return TargetResult(
        target,
        f"{ratio:.2f}x ({ours.requests_per_s:,.0f} vs {ceiling.requests_per_s:,.0f} req/s)",
        ratio >= at_least,
    )


def _lone_request(cells: list[Cell], at_most: float) -> TargetResult:
    target = f"{PNG}, c=1: cnn-serve's p50 <= {at_most}x the ceiling's"
    ours = find(cells, "cnn-serve", PNG, "multipart", 1)
    ceiling = find(cells, CEILING, PNG, "multipart", 1)
    if ours is None or ceiling is None or not ceiling.p50_ms:
        return TargetResult(target, "not measured", None)
    ratio = ours.p50_ms / ceiling.p50_ms
    return TargetResult(
        target,
        f"{ratio:.2f}x ({ours.p50_ms:.2f} vs {ceiling.p50_ms:.2f} ms)",
        ratio <= at_most,
    )


def format_results(results: list[TargetResult]) -> list[str]:
    verdicts = {True: "met", False: "MISSED", None: "-"}
    return [
        f"  {result.target:<62} {result.measured:<40} {verdicts[result.met]}" for result in results
    ]
