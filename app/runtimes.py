"""What executes a model version: LiteRT compiled from its SavedModel, or TensorFlow itself.

For a CNN this small, TensorFlow's per-call overhead dominates: the SavedModel's signature takes
~0.9 ms for one image on a 2-core box, the same graph under LiteRT (XNNPACK) ~0.1 ms, and LiteRT
is also ~30% faster at batch 64. A child process compiles the SavedModel and checks on a probe
batch that both give the same probabilities, so this process never imports TensorFlow (~550 MB
of memory) unless it has to: when asked to, or when the compiled model cannot be trusted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import numpy as np

from app import compile_cache
from app.models import ModelLoadError, check_model_io

logger = logging.getLogger(__name__)

# (N, 28, 28, 1) float32 batch in [0, 255] -> (N, classes) probabilities. Blocking.
Runner = Callable[[np.ndarray], np.ndarray]

# The two engines' probabilities differ by float rounding only (~1e-12 measured); a difference
# near this tolerance means the conversion changed the model.
AGREEMENT_ATOL = 1e-4
COMPILE_COMMAND = [sys.executable, "-m", "app.tensorflow_runtime", "compile"]
COMPILE_TIMEOUT_S = 300
# Exit statuses of the compiling child: the SavedModel itself is unusable / only conversion failed.
EXIT_INVALID_MODEL = 2
EXIT_NOT_CONVERTIBLE = 3


class Runtime(StrEnum):
    LITERT = "litert"
    TENSORFLOW = "tensorflow"


class LiteRTRunner:
    """One LiteRT interpreter; calls are serialised because an interpreter is not thread-safe."""

    def __init__(self, flatbuffer: bytes, *, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"expected one signature in the LiteRT model, got {list(signatures)}")
        self._run = interpreter.get_signature_runner(next(iter(signatures)))
        inputs, outputs = self._run.get_input_details(), self._run.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError("expected one input and one output in the LiteRT model")
        self._input_name, self.input_details = next(iter(inputs.items()))
        self._output_name, self.output_details = next(iter(outputs.items()))
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            outputs = self._run(**{self._input_name: np.ascontiguousarray(batch)})
            # Copied inside the lock: the next call may reuse the interpreter's output buffer.
            return np.array(outputs[self._output_name], copy=True)


def probe_batch() -> np.ndarray:
    """Blank, saturated and noisy images: enough to expose a conversion that changed the maths."""
    noise = np.random.default_rng(0).uniform(0, 255, (6, 28, 28, 1))
    edges = np.stack([np.zeros((28, 28, 1)), np.full((28, 28, 1), 255.0)])
    return np.concatenate([edges, noise]).astype(np.float32)


def load_runner(
    version_dir: Path,
    runtime: Runtime,
    *,
    num_classes: int,
    threads: int,
    inter_op_threads: int,
    cache_dir: Path | None,
) -> tuple[Runtime, Runner]:
    """The runner to serve with: LiteRT when asked for and trustworthy, else TensorFlow."""
    if runtime is Runtime.LITERT:
        try:
            return Runtime.LITERT, _load_litert(version_dir, num_classes, threads, cache_dir)
        except _NotConvertibleError as error:
            logger.warning("LiteRT cannot run this model (%s); serving with TensorFlow", error)
    from app import tensorflow_runtime

    tensorflow_runtime.configure_threads(threads, inter_op_threads)
    return Runtime.TENSORFLOW, tensorflow_runtime.load_signature(version_dir, num_classes)


class _NotConvertibleError(Exception):
    pass


def precompile(version_dir: Path, cache_dir: Path) -> None:
    """Fill the cache for the workers to read; a model LiteRT cannot run is left to them.

    Without LiteRT or a usable cache the workers could not read the result: nothing to do."""
    if not _litert_installed() or not compile_cache.usable(cache_dir):
        return
    with contextlib.suppress(_NotConvertibleError):
        compile_cache.compiled(version_dir, _compile_in_child, cache_dir)


def _litert_installed() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


def _compile_in_child(version_dir: Path, output: Path) -> None:
    try:
        child = subprocess.run(
            [*COMPILE_COMMAND, str(version_dir), str(output)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _NotConvertibleError(f"compiling took over {COMPILE_TIMEOUT_S} s") from None
    message = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
    if child.returncode == EXIT_INVALID_MODEL:
        raise ModelLoadError(message)
    if child.returncode != 0:
        raise _NotConvertibleError(message)


def _load_litert(
    version_dir: Path, num_classes: int, threads: int, cache_dir: Path | None
) -> LiteRTRunner:
    if not _litert_installed():
        raise _NotConvertibleError("ai-edge-litert is not installed on this platform")
    flatbuffer = compile_cache.compiled(version_dir, _compile_in_child, cache_dir)
    try:
        runner = LiteRTRunner(flatbuffer, threads=threads)
    except (ValueError, RuntimeError) as error:
        raise _NotConvertibleError(str(error)) from None
    check_model_io(
        version_dir,
        input_shape=[None, *runner.input_details["shape_signature"][1:]],
        input_is_float32=runner.input_details["dtype"] == np.float32,
        output_shape=[None, *runner.output_details["shape_signature"][1:]],
        num_classes=num_classes,
    )
    return runner
