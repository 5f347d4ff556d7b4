"""Running a version under LiteRT (XNNPACK), compiled from its SavedModel in a child process.

The child (`python -m app.compile_litert`) imports TensorFlow, converts the serving signature and
checks on a probe batch that both engines give the same probabilities; this side only reads the
flatbuffer, so a process that serves through LiteRT never holds TensorFlow in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from app import compile_cache
from app.model_format import (
    INPUT_SHAPE,
    INT8_FILE,
    INT8_RECORD,
    MAX_QUANTISATION_LOSS,
    ModelLoadError,
    Signature,
    check_model_io,
)

# The two engines' probabilities differ by float rounding only; a difference near this
# tolerance means the conversion changed the model.
AGREEMENT_ATOL = 1e-4
COMPILE_COMMAND = [sys.executable, "-m", "app.compile_litert"]
COMPILE_TIMEOUT_S = 300
# Exit statuses of the compiling child: the SavedModel itself is unusable / only conversion failed.
EXIT_INVALID_MODEL = 2
EXIT_NOT_CONVERTIBLE = 3


class NotConvertibleError(Exception):
    """LiteRT cannot run this version (the SavedModel itself may be fine)."""


class LockedSignature:
    """A LiteRT model's one signature under one interpreter; calls are serialised because an
    interpreter is not thread-safe."""

    def __init__(self, interpreter: Any) -> None:
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"expected one signature in the LiteRT model, got {list(signatures)}")
        self._run = interpreter.get_signature_runner(next(iter(signatures)))
        self.inputs: dict[str, Any] = self._run.get_input_details()
        self.outputs: dict[str, Any] = self._run.get_output_details()
        self._lock = threading.Lock()

    def __call__(self, output_name: str, **inputs: np.ndarray) -> np.ndarray:
        with self._lock:
            outputs = self._run(**inputs)
            # Copied inside the lock: the next call may reuse the interpreter's output buffer.
            return np.array(outputs[output_name], copy=True)


class LiteRTRunner:
    """A model of one input and one output (a batch of images -> their probabilities)."""

    def __init__(self, flatbuffer: bytes, *, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter  # Optional: not on every platform.

        self._signature = LockedSignature(
            Interpreter(model_content=flatbuffer, num_threads=threads)
        )
        inputs, outputs = self._signature.inputs, self._signature.outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError("expected one input and one output in the LiteRT model")
        self.input_name, self.input_details = next(iter(inputs.items()))
        self.output_name, self.output_details = next(iter(outputs.items()))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._signature(self.output_name, **{self.input_name: np.ascontiguousarray(batch)})


def probe_batch() -> np.ndarray:
    """Blank, saturated and noisy images: enough to expose a conversion that changed the maths."""
    noise = np.random.default_rng(0).uniform(0, 255, (6, *INPUT_SHAPE))
    edges = np.stack([np.zeros(INPUT_SHAPE), np.full(INPUT_SHAPE, 255.0)])
    return np.concatenate([edges, noise]).astype(np.float32)


def installed() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


def load(
    version_dir: Path, *, num_classes: int, threads: int, cache_dir: Path | None
) -> tuple[LiteRTRunner, Signature]:
    """The compiled version, from the cache or compiled now; `NotConvertibleError` if it cannot."""
    if not installed():
        raise NotConvertibleError("ai-edge-litert is not installed on this platform")
    flatbuffer = compile_cache.compiled(version_dir, _compile_in_child, cache_dir)
    return _runner(flatbuffer, version_dir, num_classes=num_classes, threads=threads)


def int8_check(metadata: dict[str, Any]) -> str | None:
    """Why the version's int8 weights may be served (their recorded check on the test split,
    within MAX_QUANTISATION_LOSS of float32), or None: unchecked, or over the loss."""
    record = metadata.get(INT8_RECORD)
    if not isinstance(record, dict):
        return None
    try:
        accuracy, reference = float(record["test_accuracy"]), float(record["reference_accuracy"])
        images = int(record["test_images"])
    except (KeyError, TypeError, ValueError):
        return None
    if reference - accuracy > MAX_QUANTISATION_LOSS:
        return None
    return (
        f"int8 weights, checked on all {images:,} test images: {accuracy:.2%} against "
        f"{reference:.2%} for the float32 SavedModel"
    )


def load_int8(
    version_dir: Path, metadata: dict[str, Any], *, num_classes: int, threads: int
) -> tuple[LiteRTRunner, Signature, str]:
    """The version's checked int8 weights (and why they may be served); `NotConvertibleError`
    if it has none, they changed since the check, or LiteRT cannot run them."""
    if not installed():
        raise NotConvertibleError("ai-edge-litert is not installed on this platform")
    passed = int8_check(metadata)
    if passed is None:
        raise NotConvertibleError(
            f"no int8 weights that passed the test-split check (python -m model.quantize "
            f"{version_dir})"
        )
    try:
        flatbuffer = (version_dir / INT8_FILE).read_bytes()
    except OSError as error:
        raise NotConvertibleError(f"the int8 weights are unreadable: {error}") from None
    if hashlib.sha256(flatbuffer).hexdigest() != metadata[INT8_RECORD].get("sha256"):
        raise NotConvertibleError(f"{INT8_FILE} is not the file that was checked")
    runner, signature = _runner(flatbuffer, version_dir, num_classes=num_classes, threads=threads)
    probabilities = runner(probe_batch())
    if not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        raise NotConvertibleError(f"{INT8_FILE} does not give probabilities")
    return runner, signature, passed


def _runner(
    flatbuffer: bytes, version_dir: Path, *, num_classes: int, threads: int
) -> tuple[LiteRTRunner, Signature]:
    try:
        runner = LiteRTRunner(flatbuffer, threads=threads)
    except (ValueError, RuntimeError) as error:
        raise NotConvertibleError(str(error)) from None
    signature = check_model_io(
        version_dir,
        input_name=runner.input_name,
        input_shape=[None, *runner.input_details["shape_signature"][1:]],
        input_is_float32=runner.input_details["dtype"] == np.float32,
        output_name=runner.output_name,
        output_shape=[None, *runner.output_details["shape_signature"][1:]],
        num_classes=num_classes,
    )
    return runner, signature


def precompile(version_dir: Path, cache_dir: Path) -> None:
    """Fill the cache for the workers to read; a model LiteRT cannot run is left to them.

    Without LiteRT or a usable cache the workers could not read the result: nothing to do."""
    if not installed() or not compile_cache.usable(cache_dir):
        return
    with contextlib.suppress(NotConvertibleError):
        compile_cache.compiled(version_dir, _compile_in_child, cache_dir)


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
        raise NotConvertibleError(f"compiling took over {COMPILE_TIMEOUT_S} s") from None
    message = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
    if child.returncode == EXIT_INVALID_MODEL:
        raise ModelLoadError(message)
    if child.returncode != 0:
        raise NotConvertibleError(message)
