"""Everything that needs TensorFlow: running the SavedModel's signature, and compiling it to
LiteRT with a check that the compiled model gives the same probabilities.

The service imports this only when it runs the model with TensorFlow. Compiling happens in a
child process, `python -m app.tensorflow_runtime compile VERSION_DIR OUTPUT`, so a service that
serves through LiteRT never holds TensorFlow's ~550 MB in memory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from app.models import SIGNATURE_NAME, ModelLoadError, check_model_io, read_metadata
from app.runtimes import (
    AGREEMENT_ATOL,
    EXIT_INVALID_MODEL,
    EXIT_NOT_CONVERTIBLE,
    LiteRTRunner,
    Runner,
    probe_batch,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

logger = logging.getLogger(__name__)


def configure_threads(intra_op_threads: int, inter_op_threads: int) -> None:
    """Size TensorFlow's thread pools; only possible before its runtime starts."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        logger.debug("TensorFlow is already initialised; keeping its thread settings")


def load_signature(version_dir: Path, num_classes: int) -> Runner:
    """The SavedModel's serving signature as a runner (the loaded module stays referenced)."""
    try:
        module = tf.saved_model.load(str(version_dir))
    except Exception as error:  # TensorFlow raises many types for a broken SavedModel.
        raise ModelLoadError(f"{version_dir} is not a loadable SavedModel: {error}") from None
    signature = module.signatures.get(SIGNATURE_NAME)
    if signature is None:
        raise ModelLoadError(f"{version_dir} has no {SIGNATURE_NAME!r} signature")
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"{version_dir}: expected one input and one output in the signature")
    input_name, input_spec = next(iter(inputs.items()))
    output_name, output_spec = next(iter(outputs.items()))
    check_model_io(
        version_dir,
        input_shape=input_spec.shape.as_list(),
        input_is_float32=input_spec.dtype == tf.float32,
        output_shape=output_spec.shape.as_list(),
        num_classes=num_classes,
    )

    def run(batch: np.ndarray, _module: Any = module) -> np.ndarray:
        return np.asarray(signature(**{input_name: tf.constant(batch)})[output_name].numpy())

    return run


def compile_to_litert(version_dir: Path) -> bytes:
    """The serving signature as a LiteRT flatbuffer, checked against TensorFlow on a probe."""
    metadata = read_metadata(version_dir)
    reference = load_signature(version_dir, len(metadata["labels"]))
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=[SIGNATURE_NAME]
    )
    flatbuffer = bytes(converter.convert())
    probe = probe_batch()
    compiled = LiteRTRunner(flatbuffer, threads=1)
    difference = float(np.abs(compiled(probe) - reference(probe)).max())
    if not difference <= AGREEMENT_ATOL:
        raise ValueError(f"LiteRT's probabilities differ from TensorFlow's by {difference:.2g}")
    return flatbuffer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile a SavedModel version to LiteRT.")
    parser.add_argument("command", choices=["compile"])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    configure_threads(1, 1)
    try:
        args.output.write_bytes(compile_to_litert(args.version_dir))
    except ModelLoadError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID_MODEL
    except Exception as error:  # The converter raises many types; all mean "not convertible".
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_NOT_CONVERTIBLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
