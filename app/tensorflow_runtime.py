"""Running a version's SavedModel signature with TensorFlow itself.

Imported only when TensorFlow is asked for, when LiteRT cannot be trusted with a version, and by
the compiling child (`app.compile_litert`): TensorFlow is most of a serving process's memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from app.model_format import SIGNATURE_NAME, ModelLoadError, Runner, Signature, check_model_io

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


def load_signature(version_dir: Path, num_classes: int) -> tuple[Runner, Signature]:
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
    signature_io = check_model_io(
        version_dir,
        input_name=input_name,
        input_shape=input_spec.shape.as_list(),
        input_is_float32=input_spec.dtype == tf.float32,
        output_name=output_name,
        output_shape=output_spec.shape.as_list(),
        num_classes=num_classes,
    )

    def run(batch: np.ndarray, _module: Any = module) -> np.ndarray:
        return np.asarray(signature(**{input_name: tf.constant(batch)})[output_name].numpy())

    return run, signature_io


def convert_to_litert(version_dir: Path, *, int8_weights: bool = False) -> bytes:
    """The serving signature converted to a LiteRT flatbuffer (unchecked); with int8 weights,
    post-training dynamic-range quantisation (no calibration data needed)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=[SIGNATURE_NAME]
    )
    if int8_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())
