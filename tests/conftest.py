from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite starts many servers, in-process and as processes: none of them takes the gRPC port
# unless its test asks for one (tests/server.py's `grpc_port`).
os.environ["CNN_SERVE_GRPC_PORT"] = "0"

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
COMMITTED_MODEL_BASE = REPO / "model" / "export"
# The newest committed version: the one the service serves out of the box.
COMMITTED_VERSION = max(
    int(path.name) for path in (COMMITTED_MODEL_BASE / "mnist").iterdir() if path.name.isdigit()
)
COMMITTED_MODEL = COMMITTED_MODEL_BASE / "mnist" / str(COMMITTED_VERSION)
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """300 official MNIST test digits (uint8, 28x28, light on dark) and their labels."""
    with np.load(FIXTURES / "mnist_test_sample.npz") as sample:
        return sample["images"], sample["labels"]


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the session's models, so tests never touch the user's own."""
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(scope="session")
def full_mnist() -> Path:
    if not SHARED_MNIST.exists():
        pytest.skip(
            f"the full MNIST set is not at {SHARED_MNIST} (only CI and dev machines have it)"
        )
    return SHARED_MNIST
