"""LiteRT with checked int8 weights by default, else LiteRT compiled from the SavedModel (same
answers as TensorFlow), safe across threads, a fallback to the next runtime whenever one cannot
be trusted, and no TensorFlow in the serving process."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from app import compile_cache, compile_litert, litert_runtime
from app.config import Settings
from app.model_format import ModelLoadError
from app.models import LoadedModel, load_model
from app.runtimes import Runtime
from tests.conftest import COMMITTED_MODEL


def settings(cache_dir: Path, runtime: Runtime = Runtime.LITERT) -> Settings:
    return Settings(runtime=runtime, compile_cache_dir=cache_dir)


@pytest.fixture(scope="module")
def litert_model(compile_cache_dir: Path) -> LoadedModel:
    return load_model(COMMITTED_MODEL, settings(compile_cache_dir))


@pytest.fixture(scope="module")
def tensorflow_model(compile_cache_dir: Path) -> LoadedModel:
    return load_model(COMMITTED_MODEL, settings(compile_cache_dir, Runtime.TENSORFLOW))


def test_float32_litert_matches_tensorflow(litert_model, tensorflow_model, digits):
    images, labels = digits
    assert litert_model.runtime is Runtime.LITERT
    assert tensorflow_model.runtime is Runtime.TENSORFLOW
    batch = list(images.astype(np.float32))
    ours, reference = litert_model.predict_batch(batch), tensorflow_model.predict_batch(batch)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    assert np.mean(ours.argmax(axis=1) == labels) >= 0.99


def test_checked_int8_weights_are_the_default_and_agree_with_tensorflow(
    tensorflow_model, digits, compile_cache_dir
):
    images, labels = digits
    model = load_model(COMMITTED_MODEL, Settings(compile_cache_dir=compile_cache_dir))
    assert model.runtime is Runtime.LITERT_INT8
    assert model.runtime_reason.startswith("int8 weights, checked on all 10,000 test images")
    batch = list(images.astype(np.float32))
    ours, reference = model.predict_batch(batch), tensorflow_model.predict_batch(batch)
    assert np.abs(ours - reference).max() < 0.1  # Quantised, so not to float precision.
    assert np.mean(ours.argmax(axis=1) == reference.argmax(axis=1)) >= 0.99
    assert np.mean(ours.argmax(axis=1) == labels) >= 0.99
    rows = model.predict_batch(batch[:7])
    np.testing.assert_allclose(rows, ours[:7], atol=1e-6)  # Whatever the batch around them.


def copy_of_committed_model(tmp_path: Path) -> Path:
    copy = tmp_path / "mnist" / "2"
    shutil.copytree(COMMITTED_MODEL, copy)
    return copy


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ("weights", "not the file that was checked"),
        ("accuracy", "no int8 weights that passed"),
        ("record", "no int8 weights that passed"),
    ],
)
def test_int8_weights_are_served_only_as_checked(tmp_path, caplog, spoil, reason):
    """Changed since the check, over the 0.05-point loss, or never checked: float32 instead."""
    version = copy_of_committed_model(tmp_path)
    metadata = json.loads((version / "metadata.json").read_text())
    if spoil == "weights":
        weights = bytearray((version / "litert_int8.tflite").read_bytes())
        weights[-100] ^= 0xFF
        (version / "litert_int8.tflite").write_bytes(bytes(weights))
    elif spoil == "accuracy":
        metadata["litert_int8"]["test_accuracy"] = (
            metadata["litert_int8"]["reference_accuracy"] - 0.0006
        )
    else:
        del metadata["litert_int8"]
    (version / "metadata.json").write_text(json.dumps(metadata))
    with caplog.at_level(logging.INFO, logger="app.runtimes"):
        model = load_model(version, Settings(compile_cache_dir=tmp_path / "cache"))
    assert model.runtime is Runtime.LITERT
    assert reason in caplog.text
    assert reason in model.runtime_reason


def test_every_batch_size_gives_the_same_rows(litert_model, digits):
    images = list(digits[0][:40].astype(np.float32))
    whole = litert_model.predict_batch(images)
    for size in (1, 3, 17, 40):
        np.testing.assert_allclose(
            litert_model.predict_batch(images[:size]), whole[:size], atol=1e-6
        )


def test_concurrent_callers_each_get_their_own_rows(litert_model, digits):
    images = digits[0].astype(np.float32)
    expected = litert_model.predict_batch(list(images))

    def predict(start: int) -> tuple[int, np.ndarray]:
        size = 1 + start % 7
        return start, litert_model.predict_batch(list(images[start : start + size]))

    with ThreadPoolExecutor(8) as pool:
        for start, rows in pool.map(predict, range(0, 280, 3)):
            np.testing.assert_allclose(rows, expected[start : start + len(rows)], atol=1e-6)


def test_serving_through_litert_never_imports_tensorflow(tmp_path: Path):
    script = (
        "import sys; from pathlib import Path; from app.config import Settings; "
        "from app.models import load_model; "
        f"settings = Settings(compile_cache_dir=Path({str(tmp_path)!r})); "
        f"model = load_model(Path({str(COMMITTED_MODEL)!r}), settings); "
        "print(model.runtime, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["litert-int8", "False"]


def test_a_failed_conversion_falls_back_to_tensorflow(monkeypatch, caplog, digits, tmp_path):
    failing = [sys.executable, "-c", "import sys; sys.exit('ConverterError: op not supported')"]
    monkeypatch.setattr(litert_runtime, "COMPILE_COMMAND", failing)
    with caplog.at_level(logging.WARNING, logger="app.runtimes"):
        model = load_model(COMMITTED_MODEL, settings(tmp_path))
    assert model.runtime is Runtime.TENSORFLOW
    assert "op not supported" in caplog.text
    assert model.predict_batch([digits[0][0].astype(np.float32)]).argmax() == digits[1][0]


def test_a_conversion_that_changes_the_outputs_is_refused(monkeypatch, tmp_path):
    run = litert_runtime.LiteRTRunner.__call__
    monkeypatch.setattr(
        litert_runtime.LiteRTRunner, "__call__", lambda self, batch: run(self, batch)[:, ::-1]
    )
    with pytest.raises(ValueError, match="differ from TensorFlow's"):
        compile_litert.compile_to_litert(COMMITTED_MODEL)
    status = compile_litert.main([str(COMMITTED_MODEL), str(tmp_path / "m")])
    assert status == litert_runtime.EXIT_NOT_CONVERTIBLE


def test_a_broken_saved_model_is_a_load_error_not_a_fallback(tmp_path: Path):
    version_dir = tmp_path / "mnist" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "metadata.json").write_text('{"labels": ["a", "b"]}')
    (version_dir / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError, match="not a loadable SavedModel"):
        load_model(version_dir, settings(tmp_path / "cache"))


def test_compiled_models_are_cached_per_version(monkeypatch, tmp_path: Path, digits):
    cache = tmp_path / "cache"
    first = load_model(COMMITTED_MODEL, settings(cache))
    assert [path.suffix for path in cache.glob("*.tflite")] == [".tflite"]
    failing = [sys.executable, "-c", "import sys; sys.exit('must not compile again')"]
    monkeypatch.setattr(litert_runtime, "COMPILE_COMMAND", failing)
    second = load_model(COMMITTED_MODEL, settings(cache))
    assert second.runtime is Runtime.LITERT
    images = list(digits[0][:8].astype(np.float32))
    np.testing.assert_array_equal(second.predict_batch(images), first.predict_batch(images))

    changed = tmp_path / "mnist" / "1"
    shutil.copytree(COMMITTED_MODEL, changed)
    (changed / "metadata.json").write_text((changed / "metadata.json").read_text() + " ")
    assert load_model(changed, settings(cache)).runtime is Runtime.TENSORFLOW


def test_a_read_only_cache_is_read(monkeypatch, tmp_path: Path, caplog):
    """The image's cache under a read-only root filesystem: its compiled model is used."""
    cache = tmp_path / "cache"
    load_model(COMMITTED_MODEL, settings(cache))
    failing = [sys.executable, "-c", "import sys; sys.exit('must not compile again')"]
    monkeypatch.setattr(litert_runtime, "COMPILE_COMMAND", failing)
    monkeypatch.setattr(compile_cache.os, "access", lambda path, mode: False)  # As if read-only.
    with caplog.at_level(logging.INFO, logger="app.compile_cache"):
        assert load_model(COMMITTED_MODEL, settings(cache)).runtime is Runtime.LITERT
    assert "Using the compiled model cached in" in caplog.text
    assert not compile_cache.usable(cache), "the parent does not try to fill it"


def test_a_cache_others_can_write_to_is_not_used(tmp_path: Path, caplog):
    cache = tmp_path / "shared"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="app.compile_cache"):
        assert load_model(COMMITTED_MODEL, settings(cache)).runtime == "litert"
    assert "only this user can write to" in caplog.text
    assert not list(cache.iterdir())


def test_without_litert_installed_the_model_runs_on_tensorflow(monkeypatch, caplog, tmp_path):
    find_spec = importlib.util.find_spec

    def litert_missing(name: str, *args: object) -> object:
        return None if name == "ai_edge_litert" else find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", litert_missing)
    with caplog.at_level(logging.WARNING, logger="app.runtimes"):
        model = load_model(COMMITTED_MODEL, settings(tmp_path))
    assert model.runtime is Runtime.TENSORFLOW
    assert "ai-edge-litert is not installed" in caplog.text


def test_precompiling_without_a_usable_cache_leaves_the_compile_to_the_workers(
    monkeypatch, tmp_path: Path
):
    marker = tmp_path / "compiled"
    # A stand-in compiler: writes an (empty) output and leaves a marker that it ran.
    script = f"import sys; open(sys.argv[-1], 'wb'); open({str(marker)!r}, 'w')"
    monkeypatch.setattr(litert_runtime, "COMPILE_COMMAND", [sys.executable, "-c", script])
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    litert_runtime.precompile(COMMITTED_MODEL, shared)
    assert not marker.exists()  # Its result could not have been cached for the workers.
    litert_runtime.precompile(COMMITTED_MODEL, tmp_path / "private")
    assert marker.exists()
