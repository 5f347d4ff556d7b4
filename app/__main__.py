"""`python -m app`: serve the model with uvicorn, configured from `CNN_SERVE_*` variables."""

from __future__ import annotations

import copy
import logging
import logging.config
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from app import litert_runtime
from app.config import Settings
from app.model_format import ModelLoadError, read_metadata
from app.runtimes import Runtime
from app.versions import scan

logger = logging.getLogger("app")


def logging_config(level: str) -> dict[str, Any]:
    """Uvicorn's own logging set-up, plus the service's loggers (`app.*`) on its console handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["app"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


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
            read_metadata(version.path)
            if settings.runtime is Runtime.LITERT:
                litert_runtime.precompile(version.path, settings.compile_cache_dir)
        except ModelLoadError as error:
            problems.append(str(error))
            continue
        ready += 1
        if ready >= settings.model_versions_served:
            return
    if not ready:
        raise ModelLoadError("; ".join(problems))


def main() -> None:
    settings = Settings()
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    try:
        preflight(settings)
    except ModelLoadError as error:
        logger.critical("Cannot start: %s", error)
        sys.exit(1)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config,
        access_log=settings.access_log,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
