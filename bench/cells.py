"""One benchmark cell: a server, a payload, a kind of request and a concurrency, as wrk saw it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cell:
    server: str
    payload: str
    body: str
    concurrency: int
    # Answered 200: a refused request is not served, so refusals never count as throughput.
    requests_per_s: float
    p50_ms: float
    p99_ms: float  # Of every answer, refusals included.
    errors: int  # Any other answer, refusals (503) included.
    checked: int
    wrong_labels: int
    # cnn-serve's own /metrics over the cell, to set beside wrk's figures.
    metrics: str = ""
    # The server's CPU time (all its processes and threads) over the cell, per answer: what
    # sets throughput once the cores are busy, and compares across machines better than req/s.
    server_cpu_us: float | None = None


def format_cell(cell: Cell) -> str:
    wrong = f"{cell.wrong_labels}/{cell.checked}" if cell.checked else "-"
    return (
        f"  {cell.server:<18}{cell.payload:<17}{cell.body:<17}c={cell.concurrency:<4}"
        f"{cell.requests_per_s:>9.0f} ok/s   p50 {cell.p50_ms:>8.2f} ms  "
        f"p99 {cell.p99_ms:>8.2f} ms  errors {cell.errors:<5} wrong labels {wrong}"
        + (f"  CPU {cell.server_cpu_us:>5.0f} us/answer" if cell.server_cpu_us is not None else "")
        + (f"\n{'':<18}{cell.metrics}" if cell.metrics else "")
    )


def find(cells: list[Cell], server: str, payload: str, body: str, concurrency: int) -> Cell | None:
    for cell in cells:
        if (cell.server, cell.payload, cell.body, cell.concurrency) == (
            server,
            payload,
            body,
            concurrency,
        ):
            return cell
    return None
