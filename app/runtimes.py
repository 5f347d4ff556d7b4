"""What executes a model version: LiteRT with its checked int8 weights, LiteRT compiled from
its SavedModel (float32), or TensorFlow itself.

For a CNN this small, TensorFlow's per-call overhead dominates, and int8 weights cost a quarter
of float32's time under LiteRT's XNNPACK at the same accuracy (the README's benchmark has the
figures), so the fastest that a version passes is served: int8 when its weights were checked on
the whole test split (`model.quantize`), else float32 LiteRT, checked against TensorFlow on a
probe, else TensorFlow.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

from app import litert_runtime
from app.model_format import Runner, Signature

logger = logging.getLogger(__name__)


class Runtime(StrEnum):
    LITERT_INT8 = "litert-int8"
    LITERT = "litert"
    TENSORFLOW = "tensorflow"


# Why each runtime runs when it is the one asked for and it can.
_AS_ASKED = {
    Runtime.LITERT: "float32, compiled from the SavedModel and checked against it on a probe",
    Runtime.TENSORFLOW: "the SavedModel's own signature",
}


def load_runner(
    version_dir: Path,
    metadata: dict[str, Any],
    runtime: Runtime,
    *,
    num_classes: int,
    threads: int,
    inter_op_threads: int,
    cache_dir: Path | None,
) -> tuple[Runtime, Runner, Signature, str]:
    """The runner to serve with, and why: the runtime asked for, or the next one down
    (`litert-int8` -> `litert` -> `tensorflow`) that can be trusted with the version."""
    fell_back = ""
    if runtime is Runtime.LITERT_INT8:
        try:
            runner, signature, why = litert_runtime.load_int8(
                version_dir, metadata, num_classes=num_classes, threads=threads
            )
            return Runtime.LITERT_INT8, runner, signature, why
        except litert_runtime.NotConvertibleError as error:
            logger.info("Not serving int8 weights (%s); serving float32", error)
            fell_back = f"{_AS_ASKED[Runtime.LITERT]} (no int8: {error})"
            runtime = Runtime.LITERT
    if runtime is Runtime.LITERT:
        try:
            runner, signature = litert_runtime.load(
                version_dir, num_classes=num_classes, threads=threads, cache_dir=cache_dir
            )
            return Runtime.LITERT, runner, signature, fell_back or _AS_ASKED[Runtime.LITERT]
        except litert_runtime.NotConvertibleError as error:
            logger.warning("LiteRT cannot run this model (%s); serving with TensorFlow", error)
            fell_back = f"{_AS_ASKED[Runtime.TENSORFLOW]} (LiteRT cannot run it: {error})"
    # Imported here, not at the top: importing TensorFlow costs ~0.5 GB of memory, which a
    # process serving through LiteRT never pays.
    from app import tensorflow_runtime

    tensorflow_runtime.configure_threads(threads, inter_op_threads)
    run, signature = tensorflow_runtime.load_signature(version_dir, num_classes)
    return Runtime.TENSORFLOW, run, signature, fell_back or _AS_ASKED[Runtime.TENSORFLOW]
