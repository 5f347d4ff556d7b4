"""`python -m app.compile_litert VERSION_DIR OUTPUT`: compile a version's SavedModel to LiteRT.

Run as a child process by `app.litert_runtime`, so the serving process never imports TensorFlow.
The flatbuffer is written only if it gives TensorFlow's probabilities on a probe batch. Exit
statuses: 0 compiled, `EXIT_INVALID_MODEL` the SavedModel itself is unusable,
`EXIT_NOT_CONVERTIBLE` only the conversion failed (serve with TensorFlow instead).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from app import tensorflow_runtime
from app.litert_runtime import (
    AGREEMENT_ATOL,
    EXIT_INVALID_MODEL,
    EXIT_NOT_CONVERTIBLE,
    LiteRTRunner,
    probe_batch,
)
from app.model_format import ModelLoadError, labels_of, read_metadata


def compile_to_litert(version_dir: Path) -> bytes:
    """The serving signature as a LiteRT flatbuffer, checked against TensorFlow on a probe."""
    labels = labels_of(read_metadata(version_dir))
    reference, _ = tensorflow_runtime.load_signature(version_dir, len(labels))
    flatbuffer = tensorflow_runtime.convert_to_litert(version_dir)
    probe = probe_batch()
    compiled = LiteRTRunner(flatbuffer, threads=1)
    difference = float(np.abs(compiled(probe) - reference(probe)).max())
    if not difference <= AGREEMENT_ATOL:
        raise ValueError(f"LiteRT's probabilities differ from TensorFlow's by {difference:.2g}")
    return flatbuffer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile a SavedModel version to LiteRT.")
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    tensorflow_runtime.configure_threads(1, 1)
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
