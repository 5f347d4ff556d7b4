"""The reloader over a model directory of real versions (copies of the committed model): new
versions go live, broken ones never do, half-copied ones are waited for, pins hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.detector import DETECTOR_FILE
from app.model_format import ModelLoadError
from app.models import ModelRegistry, VersionState
from app.reloader import Reloader
from tests.conftest import COMMITTED_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def publish(model_dir: Path, number: int) -> Path:
    """The safe way: copy under a temporary name, then rename into place."""
    staging = model_dir / f".{number}.partial"
    shutil.copytree(COMMITTED_MODEL, staging)
    return staging.rename(model_dir / str(number))


def publish_broken(model_dir: Path, number: int) -> Path:
    path = model_dir / str(number)
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"not a SavedModel")
    (path / "variables" / "variables.index").write_bytes(b"nor an index")
    shutil.copy(COMMITTED_MODEL / "metadata.json", path / "metadata.json")
    shutil.copy(COMMITTED_MODEL / DETECTOR_FILE, path / DETECTOR_FILE)  # Complete, but broken.
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models" / "mnist"
    directory.mkdir(parents=True)
    publish(directory, 1)
    return directory


def reloader_for(model_dir: Path, cache: Path, **overrides: object) -> Reloader:
    settings = Settings(
        model_base_dir=model_dir.parent,
        compile_cache_dir=cache,
        **overrides,  # type: ignore[arg-type]
    )
    return Reloader(ModelRegistry("mnist", model_dir), settings, warm_up=lambda model: None)


async def test_a_new_version_goes_live_once_settled(model_dir, compile_cache_dir):
    reloader = reloader_for(model_dir, compile_cache_dir)
    await reloader.start()
    registry = reloader.registry
    assert sorted(registry.served) == [1]
    publish(model_dir, 2)
    assert not await reloader.sync()  # Seen once: not settled yet.
    assert await reloader.sync()  # Unchanged since: loaded, and now the default.
    assert registry.current.version == 2
    assert sorted(registry.served) == [2]
    assert registry.statuses[1].state is VersionState.END
    assert reloader.outcomes == {"loaded": 2}


async def test_a_half_copied_version_is_waited_for(model_dir, compile_cache_dir):
    reloader = reloader_for(model_dir, compile_cache_dir)
    await reloader.start()
    partial = model_dir / "2"
    partial.mkdir()
    shutil.copy(COMMITTED_MODEL / "saved_model.pb", partial)  # variables/ not there yet
    for _ in range(3):
        assert not await reloader.sync()
    assert reloader.registry.current.version == 1
    assert 2 not in reloader.registry.statuses  # Not even tried, so not refused.
    shutil.copytree(COMMITTED_MODEL / "variables", partial / "variables")
    shutil.copy(COMMITTED_MODEL / "metadata.json", partial)  # Before the detector it names.
    for _ in range(3):
        assert not await reloader.sync()
    assert 2 not in reloader.registry.statuses
    for item in COMMITTED_MODEL.iterdir():
        if item.is_file() and not (partial / item.name).exists():
            shutil.copy(item, partial)
    await reloader.sync()
    assert await reloader.sync()
    assert reloader.registry.current.version == 2


async def test_a_broken_version_never_goes_live(model_dir, compile_cache_dir):
    reloader = reloader_for(model_dir, compile_cache_dir)
    await reloader.start()
    broken = publish_broken(model_dir, 3)
    await reloader.sync()
    assert not await reloader.sync()
    registry = reloader.registry
    assert registry.current.version == 1  # Still serving the good one.
    assert registry.statuses[3].state is VersionState.END
    assert "not a loadable SavedModel" in registry.statuses[3].error_message
    assert reloader.outcomes == {"loaded": 1, "failed": 1}
    for _ in range(3):  # Not retried while its files stay the same ...
        await reloader.sync()
    assert reloader.outcomes["failed"] == 1
    (broken / "saved_model.pb").write_bytes(b"still not a SavedModel, but changed")
    await reloader.sync()
    await reloader.sync()  # ... and retried once they change.
    assert reloader.outcomes["failed"] == 2
    assert registry.current.version == 1


async def test_metadata_that_does_not_match_the_model_is_refused(model_dir, compile_cache_dir):
    reloader = reloader_for(model_dir, compile_cache_dir)
    await reloader.start()
    staging = model_dir / ".2.partial"
    shutil.copytree(COMMITTED_MODEL, staging)
    metadata = json.loads((staging / "metadata.json").read_text())
    metadata["labels"] = metadata["labels"][:9]  # Nine labels for ten outputs.
    (staging / "metadata.json").write_text(json.dumps(metadata))
    staging.rename(model_dir / "2")
    await reloader.sync()
    await reloader.sync()
    assert reloader.registry.current.version == 1
    assert "9 labels" in reloader.registry.statuses[2].error_message


async def test_start_falls_back_past_a_broken_newest_version(model_dir, compile_cache_dir):
    publish_broken(model_dir, 2)
    reloader = reloader_for(model_dir, compile_cache_dir)
    await reloader.start()
    assert reloader.registry.current.version == 1
    assert reloader.registry.statuses[2].error_message


async def test_nothing_loadable_is_a_load_error(tmp_path, compile_cache_dir):
    model_dir = tmp_path / "mnist"
    publish_broken(model_dir, 1)
    with pytest.raises(ModelLoadError, match=r"version 1: .*not a loadable SavedModel"):
        await reloader_for(model_dir, compile_cache_dir).start()


async def test_a_pinned_version_ignores_newer_ones(model_dir, compile_cache_dir):
    reloader = reloader_for(model_dir, compile_cache_dir, model_version=1)
    await reloader.start()
    publish(model_dir, 2)
    for _ in range(3):
        await reloader.sync()
    assert sorted(reloader.registry.served) == [1]


async def test_several_versions_side_by_side_with_labels(model_dir, compile_cache_dir, tmp_path):
    publish(model_dir, 2)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"stable": 1, "canary": 2}))
    reloader = reloader_for(
        model_dir, compile_cache_dir, model_versions_served=2, model_labels_file=labels
    )
    await reloader.start()
    registry = reloader.registry
    assert sorted(registry.served) == [1, 2]
    assert registry.resolve("mnist").version == 2
    assert registry.resolve("mnist", label="stable").version == 1
    assert registry.resolve("mnist", version=1).version == 1
    # One batch with work for both versions: each image goes through its own.
    image = np.zeros((28, 28), np.float32)
    work = [(image, registry.served[1]), (image, registry.served[2]), (image, registry.served[1])]
    assert [model.version for model, _ in registry.predict_batch(work)] == [1, 2, 1]


async def test_a_retired_version_still_answers_what_was_queued_for_it(model_dir, compile_cache_dir):
    reloader = reloader_for(model_dir, compile_cache_dir)
    await reloader.start()
    registry = reloader.registry
    old = registry.current
    publish(model_dir, 2)
    await reloader.sync()
    await reloader.sync()
    assert 1 not in registry.served
    [(model, answer)] = registry.predict_batch([(np.zeros((28, 28), np.float32), old)])
    assert model.version == 1
    assert answer.probabilities.shape == (10,)
