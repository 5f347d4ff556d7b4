"""Compiled LiteRT models, cached per user and keyed by the model's bytes and the converter.

The first start of a model version pays for compiling it (a child that imports TensorFlow, ~3 s
of CPU); restarts and the other workers of a multi-worker server read the flatbuffer, which the
compiler had checked against TensorFlow before writing it. A lock makes workers that start
together wait for one compile instead of each running their own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeGuard

logger = logging.getLogger(__name__)

# (version_dir, output): writes the compiled model to `output`; raises if it cannot.
Compile = Callable[[Path, Path], None]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-serve"


def usable(cache_dir: Path | None) -> bool:
    """Whether compiled models can be kept in `cache_dir` (created if missing)."""
    return _private(cache_dir) and os.access(cache_dir, os.W_OK)


def compiled(version_dir: Path, compile_to: Compile, cache_dir: Path | None) -> bytes:
    """The compiled model: from the cache when it has this exact version, else compiled now."""
    if _private(cache_dir):
        cached = cache_dir / f"{cache_key(version_dir)}.tflite"
        if os.access(cache_dir, os.W_OK):
            return _through_cache(cached, version_dir, compile_to, cache_dir)
        # A read-only cache (the image's, under a read-only root filesystem) is read, not filled.
        if cached.is_file():
            logger.info("Using the compiled model cached in %s", cached)
            return cached.read_bytes()
        logger.warning("Not caching compiled models in %s: it is read-only", cache_dir)
    with tempfile.TemporaryDirectory(prefix="cnn-serve-") as scratch:
        output = Path(scratch) / "model.tflite"
        compile_to(version_dir, output)
        return output.read_bytes()


def cache_key(version_dir: Path) -> str:
    digest = hashlib.sha256(converter_version().encode())
    for path in sorted(version_dir.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(version_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _through_cache(cached: Path, version_dir: Path, compile_to: Compile, cache_dir: Path) -> bytes:
    import fcntl

    with open(cache_dir / "compile.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if cached.is_file():
            logger.info("Using the compiled model cached in %s", cached)
            return cached.read_bytes()
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        started = time.perf_counter()
        try:
            compile_to(version_dir, partial)
            os.replace(partial, cached)
        finally:
            partial.unlink(missing_ok=True)
        logger.info(
            "Compiled %s to LiteRT in %.1f s into %s",
            version_dir,
            time.perf_counter() - started,
            cached,
        )
        return cached.read_bytes()


def _private(cache_dir: Path | None) -> TypeGuard[Path]:
    if cache_dir is None or os.name != "posix":  # The lock below is POSIX's.
        return False
    try:
        _ensure_private_dir(cache_dir)
    except OSError as error:
        logger.warning("Not caching compiled models in %s: %s", cache_dir, error)
        return False
    return True


def _ensure_private_dir(path: Path) -> None:
    """Only this user may write there: a planted flatbuffer would be served as the model."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if status.st_uid != os.getuid() or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is not a directory only this user can write to")


def converter_version() -> str:
    for distribution in ("tensorflow-cpu", "tensorflow"):
        try:
            return f"{distribution} {metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
