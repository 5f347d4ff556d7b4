"""Benchmark the real service over HTTP against reference servers, in one run.

    python -m bench                     # everything, about 10 minutes
    python -m bench --quick             # fewer cells, 3 s each

Starts each server as its own process on 127.0.0.1, drives it with wrk (installed from Debian
when missing) at several concurrency levels for both payloads, checks the labels it gets back,
and prints req/s, p50/p99 latency, errors and the ratios against the HTTP ceiling. Then measures
preprocessing and the model in-process. Results go to bench/results/ (JSON and a plot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import grpc_load, mixed_soak, runtimes, scrape, targets
from bench.cells import Cell, find, format_cell
from bench.payloads import (
    FIXTURE,
    REQUEST_KINDS,
    Payload,
    Request,
    load_payloads,
    png,
    requests,
)

REPO = Path(__file__).resolve().parent.parent
COMMITTED_MODEL = REPO / "model" / "export" / "mnist" / "2"
MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
RESULTS = Path(__file__).resolve().parent / "results"
WRK_SCRIPT = Path(__file__).resolve().parent / "upload.lua"


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    bodies: tuple[str, ...]  # The request kinds it accepts (see bench.payloads.requests).


def servers(port: int) -> list[Server]:
    ours = [sys.executable, "-m", "app"]
    # The defaults (two workers); and one worker, the configuration the figures used.
    ours_env = {
        "CNN_SERVE_PORT": str(port),
        "CNN_SERVE_GRPC_PORT": str(grpc_port_of(port)),
        "CNN_SERVE_LOG_LEVEL": "warning",
    }
    one_worker = {**ours_env, "CNN_SERVE_WORKERS": "1", "CNN_SERVE_INFERENCE_THREADS": "2"}
    grpc_off = {**ours_env, "CNN_SERVE_GRPC_PORT": "0"}
    reference = [sys.executable, "-m", "bench.reference_servers"]
    every_kind = tuple(REQUEST_KINDS)
    plain = ("multipart", "raw")
    return [
        Server("cnn-serve", ours, ours_env, every_kind),
        Server("cnn-serve x1", ours, one_worker, plain),
        # REST alone, to tell what having the gRPC server on costs REST traffic.
        Server(GRPC_OFF, ours, grpc_off, ("multipart",)),
        Server("HTTP ceiling", [*reference, "ceiling", "--port", str(port)], {}, plain),
        Server(
            "HTTP ceiling x2",
            [*reference, "ceiling", "--port", str(port), "--workers", "2"],
            {},
            plain,
        ),
        Server("unbatched", [*reference, "unbatched", "--port", str(port)], {}, ("multipart",)),
        Server(
            GRPC_CEILING,
            [
                *reference,
                "grpc-ceiling",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port_of(port)),
            ],
            {},
            (),
        ),
        Server("seed-style", [*reference, "seed", "--port", str(port)], {}, ("multipart",)),
    ]


GRPC_OFF = "cnn-serve no gRPC"
GRPC_CEILING = "gRPC ceiling"


def grpc_port_of(port: int) -> int:
    return port + 1


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: install it with `sudo apt-get install wrk` and rerun.")
    print("Installing wrk from Debian ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MB."""
    pids = [pid, *_children(pid)]
    total_kb = 0
    for each in pids:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total_kb += int(match.group(1)) if match else 0
    return total_kb / 1024


def cpu_s(pid: int) -> float:
    """User and system CPU time of a process and its children (uvicorn workers), all threads."""
    total_ticks = 0
    for each in [pid, *_children(pid)]:
        try:
            # Fields after the command (which may hold spaces), from the state on; utime and
            # stime are the 14th and 15th fields of the whole line.
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total_ticks += int(fields[11]) + int(fields[12])
    return total_ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    children = [int(child) for child in found]
    return children + [grandchild for child in children for grandchild in _children(child)]


@contextmanager
def started(server: Server, port: int) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **server.env}
    began = time.perf_counter()
    # A file, not a pipe: a server that logs a lot would block once a pipe's buffer is full.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            server.command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            deadline = began + 120
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    error = log.read().decode(errors="replace")
                    raise RuntimeError(f"{server.name} exited: {error[-2000:]}")
                try:
                    ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{server.name} did not become ready")
                time.sleep(0.02)
            yield process, time.perf_counter() - began
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def run_wrk(
    wrk: str,
    port: int,
    body_file: Path,
    request: Request,
    check_labels: bool,
    concurrency: int,
    duration_s: float,
) -> dict[str, float]:
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in request.headers.items()),
        "BENCH_EXPECT": request.expect if check_labels else "",
        "BENCH_ARGMAX": str(request.argmax) if check_labels and request.argmax >= 0 else "",
    }
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{duration_s:g}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}{request.path}",
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    values: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("BENCH_"):
            for key, value in re.findall(r"(\w+)=([\d.]+)", line):
                values[key] = float(value)
    return values


def wait_until_drained(port: int, body: Path, request: Request, timeout_s: float = 120) -> None:
    """A slow server still works off the last cell's backlog (in its event loop, thread pools
    and batcher); the next cell starts once a real prediction is quick again, three times.
    (Quick: 0.2 s, well above the slowest server's c=1 latency of ~60 ms.)"""
    deadline = time.perf_counter() + timeout_s
    quick = 0
    while quick < 3 and time.perf_counter() < deadline:
        try:
            started_at = time.perf_counter()
            httpx.post(
                f"http://127.0.0.1:{port}{request.path}",
                content=body.read_bytes(),
                headers=request.headers,
                timeout=timeout_s,
            )
            quick = quick + 1 if time.perf_counter() - started_at < 0.2 else 0
        except httpx.TransportError:
            time.sleep(0.2)


def measure_servers(
    args: argparse.Namespace,
    wrk: str,
    payloads: list[Payload],
    concurrency: list[int],
    only_bodies: tuple[str, ...] | None = None,
    only_servers: tuple[str, ...] | None = None,
) -> tuple[list[Cell], dict[str, dict[str, float]]]:
    """Every server, payload, kind of request (unless narrowed) and concurrency: one cell each."""
    cells: list[Cell] = []
    process_stats: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        bodies: dict[tuple[str, str], tuple[Path, Request]] = {}
        for payload in payloads:
            for kind, request in requests(payload).items():
                path = Path(scratch) / f"{len(bodies)}.bin"
                path.write_bytes(request.body)
                bodies[(payload.name, kind)] = (path, request)

        for server in servers(args.port):
            if args.only and server.name not in args.only:
                continue
            if only_servers and server.name not in only_servers:
                continue
            if not server.bodies:  # Not an HTTP server (the gRPC ceiling: measure_grpc).
                continue
            stats: dict[str, float] = {}
            if server.name.startswith("cnn-serve"):
                # A first start compiles the model into an empty cache; a restart reads it.
                cache = Path(scratch) / f"cache-{len(process_stats)}"
                env = {**server.env, "CNN_SERVE_COMPILE_CACHE_DIR": str(cache)}
                server = replace(server, env=env)
                with started(server, args.port) as (_, first_start_s):
                    stats["first_start_s"] = first_start_s
            with started(server, args.port) as (process, cold_start_s):
                stats |= {"cold_start_s": cold_start_s, "rss_ready_mb": rss_mb(process.pid)}
                first = (
                    f" (first start, compiling: {stats['first_start_s']:.2f} s)"
                    if "first_start_s" in stats
                    else ""
                )
                print(
                    f"\n{server.name}: ready in {cold_start_s:.2f} s{first}, "
                    f"RSS {stats['rss_ready_mb']:.0f} MB",
                    flush=True,
                )
                for payload in payloads:
                    for body in server.bodies:
                        if body not in payload.kinds or (only_bodies and body not in only_bodies):
                            continue
                        path, request = bodies[(payload.name, body)]
                        for connections in concurrency:
                            own_metrics = server.name.startswith("cnn-serve")
                            before = scrape.scrape(args.port) if own_metrics else {}
                            cpu_before_s = cpu_s(process.pid)
                            values = run_wrk(
                                wrk,
                                args.port,
                                path,
                                request,
                                not server.name.startswith("HTTP ceiling"),
                                connections,
                                args.duration,
                            )
                            cell = Cell(
                                server.name,
                                payload.name,
                                body,
                                connections,
                                requests_per_s=values["ok"] / (values["duration_us"] / 1e6),
                                p50_ms=values["p50"] / 1000,
                                p99_ms=values["p99"] / 1000,
                                errors=int(
                                    sum(values[k] for k in values if k.startswith("errors_"))
                                ),
                                checked=int(values["checked"]),
                                wrong_labels=int(values["wrong"]),
                                server_cpu_us=1e6
                                * (cpu_s(process.pid) - cpu_before_s)
                                / max(values["ok"], 1),
                            )
                            if own_metrics:
                                seen = scrape.seen_between(before, scrape.scrape(args.port))
                                cell.metrics = f"{seen.describe()} (wrk: {values['requests']:,.0f})"
                            cells.append(cell)
                            print(format_cell(cell), flush=True)
                            wait_until_drained(args.port, *bodies[(payload.name, "multipart")])
                        stats.setdefault("rss_after_first_cell_mb", rss_mb(process.pid))
                stats["rss_end_mb"] = rss_mb(process.pid)
                process_stats[server.name] = stats
    return cells, process_stats


def measure_grpc(
    args: argparse.Namespace, payloads: list[Payload], concurrency: list[int]
) -> list[Cell]:
    """cnn-serve (defaults) and the gRPC ceiling driven by bench.grpc_load, a Python asyncio
    client in a process of its own, for each kind of gRPC call and payload."""
    cells = []
    by_name = {server.name: server for server in servers(args.port)}
    for name in ("cnn-serve", GRPC_CEILING):
        with started(by_name[name], args.port):
            print(f"\n{name} over gRPC (client: bench.grpc_load, asyncio):", flush=True)
            for payload in payloads:
                if payload.name not in (targets.PNG, targets.JPEG):
                    continue
                for kind in grpc_load.KINDS:
                    for connections in concurrency:
                        figures = _grpc_load(args, kind, payload, connections)
                        if name == GRPC_CEILING:  # Its constant answer is not a label.
                            figures |= {"checked": 0, "wrong_labels": 0}
                        cell = Cell(
                            f"{name} gRPC" if name == "cnn-serve" else name,
                            payload.name,
                            kind,
                            connections,
                            requests_per_s=figures["requests_per_s"],
                            p50_ms=figures["p50_ms"],
                            p99_ms=figures["p99_ms"],
                            errors=figures["errors"],
                            checked=figures["checked"],
                            wrong_labels=figures["wrong_labels"],
                            metrics=(
                                f"client CPU {figures['client_cpu_ms_per_call']:.2f} ms per call"
                                + (
                                    f", errors {figures['error_codes']}"
                                    if figures["errors"]
                                    else ""
                                )
                            ),
                        )
                        cells.append(cell)
                        print(format_cell(cell), flush=True)
    return cells


def _grpc_load(
    args: argparse.Namespace, kind: str, payload: Payload, concurrency: int
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.grpc_load",
        "--port",
        str(grpc_port_of(args.port)),
        "--kind",
        kind,
        "--payload",
        payload.name,
        "-c",
        str(concurrency),
        "-d",
        f"{args.duration:g}",
    ]
    output = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(output.stdout.splitlines()[-1])
    return figures


OVERLOAD_CONCURRENCY = (64, 256, 512, 1024)
# Photos are heavier: a flood of them is where a worker's budget runs out.
PHOTO_FLOODS = (256, 1024)
# A first answer quicker than this after a flood counts as recovered.
RECOVERED_S = 0.05


@dataclass
class OverloadCell:
    payload: str
    concurrency: int
    ok_per_s: float
    shed_per_s: float
    # What one more client, posting one request after another during the flood, saw.
    probe_p99_ms: float  # Its requests that were answered 200.
    probe_refused: float  # The share of its requests that were refused.
    probe_refused_max_ms: float  # The slowest refusal.
    other_errors: int
    wrong_labels: int
    recovery_s: float


def overload(
    wrk: str, payload: Payload, port: int, duration_s: float, concurrencies: tuple[int, ...]
) -> list[OverloadCell]:
    """The default service flooded with PNG uploads at rising concurrency: what it serves, what
    it sheds (503), what a request arriving during the flood sees, and how soon after the flood
    it answers fast."""
    server = servers(port)[0]
    request = requests(payload)["multipart"]
    cells = []
    with tempfile.TemporaryDirectory() as scratch, started(server, port):
        body = Path(scratch) / "body.bin"
        body.write_bytes(request.body)
        for concurrency in concurrencies:
            values, probe = probed(
                partial(run_wrk, wrk, port, body, request, True, concurrency, duration_s),
                port,
                request,
            )
            flood_ended = time.perf_counter()
            answered = sorted(took for status, took in probe if status == 200)
            refused = [took for status, took in probe if status == 503]
            recovery_s = _first_fast_answer(port, request, flood_ended)
            seconds = values["duration_us"] / 1e6
            shed = values["shed"]
            cell = OverloadCell(
                payload.name,
                concurrency,
                ok_per_s=values["ok"] / seconds,
                shed_per_s=shed / seconds,
                probe_p99_ms=1000 * answered[int(0.99 * (len(answered) - 1))] if answered else 0,
                probe_refused=len(refused) / max(len(probe), 1),
                probe_refused_max_ms=1000 * max(refused, default=0),
                other_errors=int(sum(values[k] for k in values if k.startswith("errors_")) - shed),
                wrong_labels=int(values["wrong"]),
                recovery_s=recovery_s,
            )
            cells.append(cell)
            print(
                f"  c={concurrency:<5} ok {cell.ok_per_s:>6.0f}/s  shed {cell.shed_per_s:>6.0f}/s  "
                f"a request during it: p99 {cell.probe_p99_ms:>6.1f} ms, refused "
                f"{100 * cell.probe_refused:3.0f} % (within {cell.probe_refused_max_ms:.0f} ms)  "
                f"other errors {cell.other_errors}  "
                f"wrong labels {cell.wrong_labels}  fast again after {cell.recovery_s:.2f} s",
                flush=True,
            )
            wait_until_drained(port, body, request)
    return cells


def probed(
    flood: Callable[[], dict[str, float]], port: int, request: Request
) -> tuple[dict[str, float], list[tuple[int, float]]]:
    """Runs the flood and, beside it, one client posting one request after another: what a
    request arriving during the flood sees (status, seconds), which wrk's figures cannot tell
    apart for the answered and the refused."""
    seen: list[tuple[int, float]] = []
    with ThreadPoolExecutor(1) as pool:
        flooding = pool.submit(flood)
        with httpx.Client(timeout=30) as client:
            time.sleep(0.5)  # Into the flood.
            while not flooding.done():
                began = time.perf_counter()
                try:
                    status = client.post(
                        f"http://127.0.0.1:{port}{request.path}",
                        content=request.body,
                        headers=request.headers,
                    ).status_code
                except httpx.TransportError:
                    status = 0
                seen.append((status, time.perf_counter() - began))
        return flooding.result(), seen


def _first_fast_answer(port: int, request: Request, since: float, timeout_s: float = 60) -> float:
    with httpx.Client(timeout=timeout_s) as client:
        while time.perf_counter() - since < timeout_s:
            began = time.perf_counter()
            response = client.post(
                f"http://127.0.0.1:{port}{request.path}",
                content=request.body,
                headers=request.headers,
            )
            if response.status_code == 200 and time.perf_counter() - began < RECOVERED_S:
                return time.perf_counter() - since
    return float("inf")


def soak(
    wrk: str, payload: Payload, port: int, seconds: float, every_s: float = 10
) -> list[tuple[float, float]]:
    """RSS of the default service, sampled while it serves PNG uploads at c=64 for `seconds`."""
    server = servers(port)[0]
    with tempfile.TemporaryDirectory() as scratch, started(server, port) as (process, _):
        request = requests(payload)["multipart"]
        body = Path(scratch) / "body.bin"
        body.write_bytes(request.body)
        headers = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        env = {**os.environ, "BENCH_BODY": str(body), "BENCH_HEADERS": headers}
        load = subprocess.Popen(
            [
                wrk,
                "-t1",
                "-c64",
                f"-d{seconds:g}s",
                "-s",
                str(WRK_SCRIPT),
                f"http://127.0.0.1:{port}/predict",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        began = time.perf_counter()
        samples = [(0.0, rss_mb(process.pid))]
        while load.poll() is None:
            time.sleep(every_s)
            samples.append((time.perf_counter() - began, rss_mb(process.pid)))
            print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:.0f} MB", flush=True)
        summary = load.stdout.read() if load.stdout else ""
        print(*(line for line in summary.splitlines() if "requests in" in line), sep="\n")
    return samples


def ratios(cells: list[Cell], concurrency: int) -> list[str]:
    lines = []
    for payload in ("28x28 PNG", "28x28 off-format", "800x600 JPEG"):
        ours = find(cells, "cnn-serve", payload, "multipart", concurrency)
        if ours is None:
            continue
        for server, reference in [
            ("cnn-serve", "HTTP ceiling"),
            ("cnn-serve", "HTTP ceiling x2"),
            ("cnn-serve x1", "HTTP ceiling"),
            ("cnn-serve", "unbatched"),
            ("cnn-serve", "seed-style"),
        ]:
            mine = find(cells, server, payload, "multipart", concurrency)
            other = find(cells, reference, payload, "multipart", concurrency)
            if mine and other and other.requests_per_s:
                lines.append(
                    f"  {payload}, c={concurrency}: {server} / {reference} = "
                    f"{mine.requests_per_s / other.requests_per_s:.2f}x"
                )
        rest_alone = find(cells, GRPC_OFF, payload, "multipart", concurrency)
        if rest_alone and rest_alone.requests_per_s:
            lines.append(
                f"  {payload}, c={concurrency}: cnn-serve with gRPC on / off (REST traffic) = "
                f"{ours.requests_per_s / rest_alone.requests_per_s:.2f}x"
            )
        for kind in grpc_load.KINDS:
            over_grpc = find(cells, "cnn-serve gRPC", payload, kind, concurrency)
            grpc_ceiling = find(cells, GRPC_CEILING, payload, kind, concurrency)
            if over_grpc:
                lines.append(
                    f"  {payload}, c={concurrency}: gRPC {kind} / REST multipart = "
                    f"{over_grpc.requests_per_s / ours.requests_per_s:.2f}x"
                )
            if over_grpc and grpc_ceiling and grpc_ceiling.requests_per_s:
                lines.append(
                    f"  {payload}, c={concurrency}: gRPC {kind} / gRPC ceiling = "
                    f"{over_grpc.requests_per_s / grpc_ceiling.requests_per_s:.2f}x"
                )
        for kind in REQUEST_KINDS:
            other_kind = find(cells, "cnn-serve", payload, kind, concurrency)
            if other_kind and kind != "multipart":
                lines.append(
                    f"  {payload}, c={concurrency}: {kind} / multipart = "
                    f"{other_kind.requests_per_s / ours.requests_per_s:.2f}x"
                )
    return lines


def upload_kinds() -> list[tuple[str, list[bytes]]]:
    """A few digits rendered as each of several kinds of upload (model.uploads), to time."""
    import numpy as np

    from model.uploads import generate

    with np.load(FIXTURE) as sample:
        images, labels = sample["images"][:8], sample["labels"][:8]
    kinds: dict[str, list[bytes]] = {}
    for upload in generate(images, labels, per_category=8, categories=UPLOAD_KINDS_TIMED):
        kinds.setdefault(upload.category, []).append(upload.data)
    # Test digits drawn dark on white: not in MNIST's format, so they take the whole of
    # preprocessing.
    dark_on_white = [png(255 - digit) for digit in images]
    return [("28x28 PNG dark on white (mean of 8)", dark_on_white)] + [
        (f"{category} (mean of 8)", data) for category, data in kinds.items()
    ]


UPLOAD_KINDS_TIMED = (
    "scanned_paper",
    "canvas_drawing",
    "phone_photo",
    "camera_full_resolution",
    "fine_pen",
    "thumbnail",
)


def preprocessing_times(payloads: list[Payload]) -> dict[str, float]:
    """Preprocessing per image of each payload and kind of upload, in this process (ms)."""
    from app.preprocess import preprocess

    results: dict[str, float] = {}
    kinds = [(payload.name, [payload.image]) for payload in payloads] + upload_kinds()
    for name, images in kinds:
        for image in images:
            preprocess(image)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < 1.5:
            for image in images:
                preprocess(image)
            count += len(images)
        results[name] = (time.perf_counter() - began) / count * 1000
    return results


def official_test_set() -> tuple[Any, Any] | None:
    """The official MNIST test digits and labels, when the shared data is beside the checkout."""
    import numpy as np

    if not MNIST.is_file():
        print(f"  ({MNIST} is missing: no accuracy column)")
        return None
    with np.load(MNIST) as data:
        return data["x_test"], data["y_test"]


@contextmanager
def busy_core(busy: bool) -> Iterator[None]:
    """Another process spinning on one core while the servers are measured, when asked."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def plot(cells: list[Cell], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    payloads = sorted({cell.payload for cell in cells}, reverse=True)
    figure, axes = plt.subplots(2, len(payloads), figsize=(6 * len(payloads), 8), squeeze=False)
    for column, payload in enumerate(payloads):
        series = sorted({(c.server, c.body) for c in cells if c.payload == payload})
        for server, body in series:
            points = sorted(
                (c.concurrency, c.requests_per_s, c.p99_ms)
                for c in cells
                if (c.server, c.body, c.payload) == (server, body, payload)
            )
            xs = [p[0] for p in points]
            label = server if body == "multipart" else f"{server} ({body})"
            axes[0][column].plot(xs, [p[1] for p in points], marker="o", label=label)
            axes[1][column].plot(xs, [p[2] for p in points], marker="o", label=label)
        axes[0][column].set(
            title=f"{payload}: throughput",
            xlabel="concurrent connections",
            ylabel="requests/s",
            xscale="log",
        )
        axes[1][column].set(
            title=f"{payload}: p99 latency",
            xlabel="concurrent connections",
            ylabel="ms (log)",
            xscale="log",
            yscale="log",
        )
        for axis in (axes[0][column], axes[1][column]):
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle(f"cnn-serve benchmark ({os.cpu_count()} cores, loopback, wrk -t1)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of the target cells (the first round measures every cell)",
    )
    parser.add_argument(
        "--busy", action="store_true", help="keep one core busy with another process throughout"
    )
    parser.add_argument("--duration", type=float, default=6, help="seconds per cell")
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--only", nargs="+", help="servers to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="c=1 and c=64, 3 s per cell")
    parser.add_argument("--no-micro", action="store_true", help="skip the in-process part")
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="only: RSS under c=64 PNG load this long"
    )
    parser.add_argument(
        "--soak-mixed",
        type=float,
        metavar="SECONDS",
        help="only: RSS and open files under valid, invalid, oversize and cut-off uploads",
    )
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.duration, args.rounds = [1, 64], 3, 1

    wrk = ensure_wrk()
    payloads = load_payloads()
    if args.soak_mixed:
        max_upload_bytes = 1_000_000
        server = servers(args.port)[0]
        server = replace(
            server, env={**server.env, "CNN_SERVE_MAX_UPLOAD_BYTES": str(max_upload_bytes)}
        )
        clients = mixed_soak.CONCURRENCY
        print(f"cnn-serve, mixed uploads with {clients} clients for {args.soak_mixed:g} s:")
        with started(server, args.port) as (process, _):
            samples, outcomes = mixed_soak.run(
                args.port,
                process.pid,
                payloads,
                args.soak_mixed,
                rss_mb,
                _children,
                max_upload_bytes,
            )
        print(
            "  answers: " + ", ".join(f"{key} x{value}" for key, value in sorted(outcomes.items()))
        )
        start, end = samples[0], samples[-1]
        print(
            f"  RSS {start[1]:.0f} -> {end[1]:.0f} MB, open files {start[2]} -> {end[2]} "
            f"after {sum(outcomes.values())} requests"
        )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak-mixed.json").write_text(
            json.dumps({"seconds_rss_mb_open_files": samples, "answers": outcomes}, indent=1)
        )
        return
    if args.soak:
        print(f"cnn-serve, 28x28 PNG multipart uploads at c=64 for {args.soak:g} s:")
        rss_samples = soak(wrk, payloads[0], args.port, args.soak)
        RESULTS.mkdir(exist_ok=True)
        soaked = json.dumps({"seconds_and_rss_mb": rss_samples}, indent=1)
        (RESULTS / "soak.json").write_text(soaked)
        return
    machine = targets.cpu_description()
    print(
        f"{machine}; Python {platform.python_version()}\n"
        f"wrk -t1, {args.duration:g} s per cell, concurrency {args.concurrency}"
        + (", one core kept busy by another process" if args.busy else "")
    )
    with busy_core(args.busy):
        cells, process_stats = measure_servers(args, wrk, payloads, args.concurrency)
        if not args.only or "cnn-serve" in args.only or GRPC_CEILING in args.only:
            cells += measure_grpc(args, payloads, [1, 64])
        rounds = [cells]
        for number in range(2, args.rounds + 1):
            print(f"\nRound {number}: the target cells again")
            again, _ = measure_servers(
                args,
                wrk,
                [payload for payload in payloads if payload.name in (targets.PNG, targets.JPEG)],
                [1, 64],
                only_bodies=("multipart",),
                only_servers=("cnn-serve", targets.CEILING),
            )
            rounds.append(again)
        overload_cells: list[OverloadCell] = []
        if not args.only or "cnn-serve" in args.only:
            for payload, flood in (
                (payloads[0], OVERLOAD_CONCURRENCY),
                (payloads[-1], PHOTO_FLOODS),
            ):
                print(
                    f"\nOverload: cnn-serve (defaults), {payload.name} multipart, "
                    f"{args.duration:g} s each:"
                )
                overload_cells += overload(wrk, payload, args.port, args.duration, flood)

    print("\nRatios (req/s, multipart unless said):")
    for concurrency in args.concurrency:
        for line in ratios(cells, concurrency):
            print(line)
    print("\nProcesses:")
    for name, stats in process_stats.items():
        first = stats.get("first_start_s")
        compiling = f" (first start, compiling the model: {first:.2f} s)" if first else ""
        print(
            f"  {name:<13} cold start {stats['cold_start_s']:.2f} s{compiling}, RSS ready "
            f"{stats['rss_ready_mb']:.0f} MB, after the first cell "
            f"{stats['rss_after_first_cell_mb']:.0f} MB, at the end {stats['rss_end_mb']:.0f} MB"
        )

    print(f"\nTargets ({machine}):")
    target_results = []
    for number, round_cells in enumerate(rounds, start=1):
        print(f" round {number}:")
        results = targets.check(round_cells)
        print(*targets.format_results(results), sep="\n")
        target_results.append([asdict(result) for result in results])

    micro: dict[str, float] = {}
    model_runtimes: list[runtimes.RuntimeFigures] = []
    if not args.no_micro:
        micro = preprocessing_times(payloads)
        print("\nIn-process preprocessing (ms per image):")
        for key, value in micro.items():
            print(f"  {key:<44}{value:>8.3f}")
        print("\nThe model, in-process:")
        model_runtimes = runtimes.measure(COMMITTED_MODEL, official_test_set())
        print(*runtimes.report(model_runtimes), sep="\n")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "busy_core": args.busy,
                "cells": [asdict(cell) for cell in cells],
                "rounds": [[asdict(cell) for cell in round_cells] for round_cells in rounds[1:]],
                "targets": target_results,
                "overload": [asdict(cell) for cell in overload_cells],
                "processes": process_stats,
                "preprocessing_ms": micro,
                "model_runtimes": [asdict(figure) for figure in model_runtimes],
                "settings": {
                    "duration_s": args.duration,
                    "cores": os.cpu_count(),
                },
            },
            indent=2,
        )
        + "\n"
    )
    plot(cells, RESULTS / "bench.png")
    print(f"\nWrote {RESULTS / 'latest.json'} and {RESULTS / 'bench.png'}")


if __name__ == "__main__":
    main()
