"""The committed model under every runtime the service could run it with, in this process: the
time per image at batch 1, 8 and 64 with one thread (what a worker uses), and the accuracy on
the official test set when the MNIST file is at hand.

- `litert-int8`: the checked int8 weights the service serves (`model.quantize`).
- `litert` float32: the SavedModel compiled to LiteRT, what the service falls back to.
- `litert` float16 weights: post-training float16 quantisation (dequantised to float32 on CPUs).
- `onnxruntime` float32: the SavedModel converted by tf2onnx (when both are installed).
- `tensorflow`: the SavedModel's own signature.

Then the version's non-digit detector (`app/detector.py`), which runs after the model on the
same batch: its time adds to whichever runtime runs the model.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.model_format import Runner

BATCH_SIZES = (1, 8, 64)
SECONDS_PER_SIZE = 1.0


@dataclass
class RuntimeFigures:
    name: str
    ms_per_image: dict[int, float]  # By batch size.
    test_accuracy: float | None


@contextmanager
def runners(version_dir: Path) -> Iterator[dict[str, Runner]]:
    from app import tensorflow_runtime
    from app.litert_runtime import LiteRTRunner
    from app.model_format import INT8_FILE, labels_of, read_metadata

    def litert(flatbuffer: bytes) -> Runner:
        return LiteRTRunner(flatbuffer, threads=1)

    tensorflow_runtime.configure_threads(1, 1)
    found: dict[str, Runner] = {}
    if (version_dir / INT8_FILE).exists():
        found["litert-int8 (served)"] = litert((version_dir / INT8_FILE).read_bytes())
    found["litert float32"] = litert(tensorflow_runtime.convert_to_litert(version_dir))
    found["litert float16 weights"] = litert(_float16_weights(version_dir))
    with tempfile.TemporaryDirectory(prefix="cnn-serve-bench-") as scratch:
        onnx = _onnx_runner(version_dir, Path(scratch))
        if onnx is not None:
            found["onnxruntime float32"] = onnx
        signature, _ = tensorflow_runtime.load_signature(
            version_dir, len(labels_of(read_metadata(version_dir)))
        )
        found["tensorflow"] = signature
        yield found


def measure(
    version_dir: Path, test_set: tuple[np.ndarray, np.ndarray] | None
) -> list[RuntimeFigures]:
    figures = []
    with runners(version_dir) as found:
        for name, run in found.items():
            figures.append(
                RuntimeFigures(
                    name,
                    {size: _ms_per_image(run, size) for size in BATCH_SIZES},
                    None if test_set is None else _accuracy(run, *test_set),
                )
            )
    detector = _detector(version_dir)
    if detector is not None:
        figures.append(
            RuntimeFigures(
                "+ non-digit detector",
                {size: _ms_per_image(detector, size) for size in BATCH_SIZES},
                None,
            )
        )
    return figures


def _detector(version_dir: Path) -> Runner | None:
    """The version's detector of non-digits, as the service runs it after each model call
    (its cost adds to the model's)."""
    from app.detector import load_detector
    from app.model_format import labels_of, read_metadata

    metadata = read_metadata(version_dir)
    classes = len(labels_of(metadata))
    detector = load_detector(version_dir, metadata, classes)
    if detector is None:
        return None
    found = detector

    def run(batch: np.ndarray) -> np.ndarray:
        probabilities = np.full((len(batch), classes), 1 / classes, np.float32)
        return found.class_probabilities(batch[..., 0], probabilities)

    return run


def _ms_per_image(run: Runner, size: int) -> float:
    batch = np.random.default_rng(size).uniform(0, 255, (size, 28, 28, 1)).astype(np.float32)
    run(batch)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < SECONDS_PER_SIZE:
        run(batch)
        count += 1
    return (time.perf_counter() - began) / count / size * 1000


def _accuracy(run: Runner, images: np.ndarray, labels: np.ndarray) -> float:
    predictions = np.concatenate(
        [
            run(np.ascontiguousarray(images[start : start + 500], dtype=np.float32)[..., None])
            for start in range(0, len(images), 500)
        ]
    ).argmax(axis=1)
    return float((predictions == labels).mean())


def _float16_weights(version_dir: Path) -> bytes:
    import tensorflow as tf

    from app.model_format import SIGNATURE_NAME

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=[SIGNATURE_NAME]
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return bytes(converter.convert())


def _onnx_runner(version_dir: Path, scratch: Path) -> Runner | None:
    if not all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime")):
        print("  (onnxruntime or tf2onnx is not installed: no ONNX Runtime row)")
        return None
    import onnxruntime

    model = scratch / "model.onnx"
    subprocess.run(
        [
            *(sys.executable, "-m", "tf2onnx.convert"),
            *("--saved-model", str(version_dir), "--output", str(model), "--opset", "17"),
        ],
        check=True,
        capture_output=True,
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: batch})[0])

    return run


def report(figures: list[RuntimeFigures]) -> list[str]:
    header = "  " + f"{'runtime':<26}" + "".join(f"batch {size:<3} " for size in BATCH_SIZES)
    lines = [header + " ms per image, one thread; official test set"]
    for figure in figures:
        times = "".join(f"{figure.ms_per_image[size]:>9.4f} " for size in BATCH_SIZES)
        accuracy = "-" if figure.test_accuracy is None else f"{figure.test_accuracy:.2%}"
        lines.append(f"  {figure.name:<26}{times} {accuracy:>8}")
    return lines
