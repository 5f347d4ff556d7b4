"""`python -m app`: serve the model with uvicorn, configured from `CNN_SERVE_*` variables."""

from __future__ import annotations

import contextlib
import copy
import logging
import logging.config
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app import listening, litert_runtime
from app.config import METRICS_DIR_VARIABLE, Settings
from app.model_format import ModelLoadError, read_metadata
from app.runtimes import Runtime
from app.versions import scan

logger = logging.getLogger("app")


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """Uvicorn's own logging set-up, plus the service's loggers (`app.*`, with the access log
    `app.access`), every line with its request's id; as text or as one JSON object per line."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "app.observability.RequestIdFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id"]
    if log_format == "json":
        for formatter in config["formatters"].values():
            formatter.clear()
            formatter["()"] = "app.observability.JsonFormatter"
    else:
        config["formatters"]["default"]["fmt"] = "%(levelprefix)s [%(request_id)s] %(message)s"
    config["loggers"]["app"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def default_metrics_dir(pid: int) -> Path:
    """Where the metric values go unless the operator chose a directory: one per server."""
    return Path(tempfile.gettempdir()) / f"cnn-serve-metrics-{pid}"


def prepare_metrics_dir() -> Path:
    """Where every worker keeps its metric values (prometheus-client's multiprocess mode),
    emptied of an earlier run's values now, before any worker starts. Set before anything
    imports prometheus_client. Only the library's own `*.db` files are removed: the directory
    may be one the operator chose."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    path = Path(given) if given else default_metrics_dir(os.getpid())
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    clear_metrics_dir(path)
    os.environ[METRICS_DIR_VARIABLE] = str(path)
    return path


def clear_metrics_dir(path: Path) -> None:
    for values in path.glob("*.db"):
        values.unlink(missing_ok=True)


def preflight(settings: Settings) -> None:
    """Once, before any worker starts: refuse a repository with no usable version with one
    clear line (a failing worker would otherwise be restarted forever), and compile what the
    workers will serve, so they read it from the cache."""
    on_disk = scan(settings.model_dir)
    usable = [v for v in on_disk if v.complete]
    if settings.model_version is not None:
        usable = [v for v in usable if v.number == settings.model_version]
    if not usable:
        which = f"version {settings.model_version}" if settings.model_version else "model versions"
        raise ModelLoadError(
            f"no {which} under {settings.model_dir} (expected {settings.model_dir}/1/ ...)"
        )
    problems, ready = [], 0
    for version in sorted(usable, key=lambda v: -v.number):
        try:
            metadata = read_metadata(version.path)
            # Checked int8 weights need no compiling; float32 LiteRT does.
            needs_compiling = settings.runtime is Runtime.LITERT or (
                settings.runtime is Runtime.LITERT_INT8
                and litert_runtime.int8_check(metadata) is None
            )
            if needs_compiling:
                litert_runtime.precompile(version.path, settings.compile_cache_dir)
        except ModelLoadError as error:
            problems.append(str(error))
            continue
        ready += 1
        if ready >= settings.model_versions_served:
            return
    if not ready:
        raise ModelLoadError("; ".join(problems))


def serve_with_workers(config: uvicorn.Config, grpc_port: int) -> None:
    """uvicorn's supervisor (restarts, SIGHUP, shutdown) over the workers, each on a socket of
    its own where the platform has SO_REUSEPORT, else all on the supervisor's one."""
    if not listening.supported():
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    # The gRPC port too: its workers bind it with SO_REUSEPORT themselves (gRPC's default).
    ports = [port for port in (config.port, grpc_port) if port]
    with contextlib.ExitStack() as reserved:
        for port in ports:
            try:
                reserved.enter_context(listening.reserve_port(config.host, port))
            except OSError as error:
                logger.critical("Cannot listen on %s:%d: %s", config.host, port, error)
                sys.exit(STARTUP_FAILURE)
        stand_in = listening.PerWorkerSocket(config.host, config.port)
        Multiprocess(config, sockets=[cast(socket.socket, stand_in)]).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(settings: Settings, log_config: dict[str, Any]) -> None:
    try:
        preflight(settings)
    except ModelLoadError as error:
        logger.critical("Cannot start: %s", error)
        sys.exit(1)
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config,
        access_log=False,  # The service writes its own access lines (`app.access`).
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    if settings.workers > 1:
        serve_with_workers(config, settings.grpc_port)
        return
    # Once shut down, uvicorn raises the signal that stopped it again; under the default
    # handler SIGTERM would then end the process before `main` removes the metrics directory.
    # Exit through Python instead, with 0, as the supervisor of several workers does.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def main() -> None:
    settings = Settings()
    metrics_dir = prepare_metrics_dir()
    log_config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(log_config)
    try:
        serve(settings, log_config)
    finally:
        clear_metrics_dir(metrics_dir)
        with contextlib.suppress(OSError):  # Left when the operator's directory holds more.
            metrics_dir.rmdir()


if __name__ == "__main__":
    main()
