from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import DEFAULT_MODEL_BASE_DIR, Settings
from app.main import warm_up_sizes


def test_defaults_serve_the_committed_model():
    settings = Settings()
    assert settings.model_dir == DEFAULT_MODEL_BASE_DIR / "mnist"
    assert settings.port == 8000
    assert settings.max_upload_bytes == 10 * 1024 * 1024


def test_environment_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CNN_SERVE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("CNN_SERVE_BATCH_TIMEOUT_MS", "2.5")
    monkeypatch.setenv("CNN_SERVE_MODEL_VERSION", "3")
    settings = Settings()
    assert settings.max_batch_size == 16
    assert settings.batch_timeout_ms == 2.5
    assert settings.model_version == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CNN_SERVE_MAX_BATCH_SIZE", "0"),
        ("CNN_SERVE_BATCH_TIMEOUT_MS", "-1"),
        ("CNN_SERVE_PORT", "70000"),
        ("CNN_SERVE_MODEL_NAME", "../etc"),
        ("CNN_SERVE_LOG_LEVEL", "loud"),
        ("CNN_SERVE_MAX_UPLOAD_BYTES", "lots"),
        ("CNN_SERVE_MAX_BATCH_UPLOAD_BYTES", "2048"),
    ],
)
def test_nonsense_fails_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_warm_up_covers_every_batch_size_class():
    assert warm_up_sizes(1) == [1]
    assert warm_up_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert warm_up_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
