"""Every setting of the service, read once from `CNN_SERVE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.compile_cache import default_cache_dir
from app.decoding import DEFAULT_MAX_PIXELS
from app.runtimes import Runtime

DEFAULT_MODEL_BASE_DIR = Path(__file__).resolve().parent.parent / "model" / "export"
MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNN_SERVE_", env_file=None, frozen=True)

    # Which model: the newest version under <model_base_dir>/<model_name>/ unless one is pinned.
    model_base_dir: Path = DEFAULT_MODEL_BASE_DIR
    model_name: str = Field("mnist", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    model_version: int | None = Field(None, ge=1)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Worker processes, each with its own event loop and model: the event loop, not the model,
    # is the bottleneck, so about one per core (the README's benchmark compares 1 and 2).
    workers: int = Field(2, ge=1, le=32)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False

    # Micro-batching: a lone request goes straight to the model; under load, requests that
    # arrive while the model is busy are grouped, up to max_batch_size images. A batch of
    # several may wait up to batch_timeout_ms for more; 0 (measured best, see the README) takes
    # just what queued while the model was busy.
    max_batch_size: int = Field(64, ge=1, le=1024)
    batch_timeout_ms: float = Field(0.0, ge=0, le=1000)
    max_queue_size: int = Field(512, ge=1)
    request_timeout_s: float = Field(10.0, gt=0, le=600)

    # Limits on what a client may send.
    max_upload_bytes: int = Field(10 * MiB, ge=1024)
    max_batch_upload_bytes: int = Field(64 * MiB, ge=1024)
    max_batch_files: int = Field(64, ge=1, le=1024)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=784)

    # What runs the model: LiteRT compiled from the SavedModel at start-up (checked against it,
    # falling back to TensorFlow when it cannot match), or the SavedModel's TensorFlow signature.
    runtime: Runtime = Runtime.LITERT
    # Where compiled LiteRT models are kept between starts; must be writable by this user only.
    compile_cache_dir: Path = Field(default_factory=default_cache_dir)
    # Threads one model call may use (LiteRT, or TensorFlow's intra-op pool), and image threads,
    # sized for a small CPU box. One model thread per worker: the workers already fill the cores.
    inference_threads: int = Field(1, ge=1, le=256)
    tf_inter_op_threads: int = Field(1, ge=0, le=256)
    preprocess_threads: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _batch_upload_fits_a_file(self) -> Settings:
        if self.max_batch_upload_bytes < self.max_upload_bytes:
            raise ValueError("max_batch_upload_bytes must be at least max_upload_bytes")
        return self

    @property
    def model_dir(self) -> Path:
        return self.model_base_dir / self.model_name
