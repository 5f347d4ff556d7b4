"""What executes a model version: LiteRT compiled from its SavedModel, or TensorFlow itself.

For a CNN this small, TensorFlow's per-call overhead dominates, so LiteRT is the default (the
README's benchmark has the figures). TensorFlow runs a version when asked to, or when LiteRT is
missing or cannot be trusted with it.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

from app import litert_runtime
from app.model_format import Runner, Signature

logger = logging.getLogger(__name__)


class Runtime(StrEnum):
    LITERT = "litert"
    TENSORFLOW = "tensorflow"


def load_runner(
    version_dir: Path,
    runtime: Runtime,
    *,
    num_classes: int,
    threads: int,
    inter_op_threads: int,
    cache_dir: Path | None,
) -> tuple[Runtime, Runner, Signature]:
    """The runner to serve with: LiteRT when asked for and trustworthy, else TensorFlow."""
    if runtime is Runtime.LITERT:
        try:
            runner, signature = litert_runtime.load(
                version_dir, num_classes=num_classes, threads=threads, cache_dir=cache_dir
            )
            return Runtime.LITERT, runner, signature
        except litert_runtime.NotConvertibleError as error:
            logger.warning("LiteRT cannot run this model (%s); serving with TensorFlow", error)
    # Imported here, not at the top: importing TensorFlow costs ~0.5 GB of memory, which a
    # process serving through LiteRT never pays.
    from app import tensorflow_runtime

    tensorflow_runtime.configure_threads(threads, inter_op_threads)
    run, signature = tensorflow_runtime.load_signature(version_dir, num_classes)
    return Runtime.TENSORFLOW, run, signature
