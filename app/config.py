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
# prometheus-client's multiprocess directory (see app.metrics): `python -m app` sets it.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNN_SERVE_", env_file=None, frozen=True)

    # Which model: the newest version under <model_base_dir>/<model_name>/ unless one is pinned.
    model_base_dir: Path = DEFAULT_MODEL_BASE_DIR
    model_name: str = Field("mnist", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    model_version: int | None = Field(None, ge=1)
    # Without a pinned version: how many of the newest versions are served side by side.
    model_versions_served: int = Field(1, ge=1, le=32)
    # How often the model directory is looked at for new versions (0: only at start and on
    # SIGHUP), and a JSON file of version labels such as {"stable": 3, "canary": 4}.
    model_poll_interval_s: float = Field(2.0, ge=0, le=3600)
    model_labels_file: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # TensorFlow Serving's and KServe v2's gRPC APIs, on `host` too (TF Serving's own default
    # port); 0 turns the gRPC server off.
    grpc_port: int = Field(8500, ge=0, le=65535)
    # Worker processes, each with its own event loop and model: the event loop, not the model,
    # is the bottleneck, so about one per core (the README's benchmark compares 1 and 2).
    workers: int = Field(2, ge=1, le=32)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Logs as text, or as one JSON object per line; an access line per request (with its id,
    # route, status, timings and model version) when access_log is on.
    log_format: Literal["text", "json"] = "text"
    access_log: bool = False
    # SIGTERM: readiness turns 503 at once; after shutdown_grace_s new connections are refused
    # and in-flight requests get up to shutdown_timeout_s to finish.
    shutdown_grace_s: float = Field(1.0, ge=0, le=300)
    shutdown_timeout_s: int = Field(10, ge=1, le=600)

    # Micro-batching: a lone request goes straight to the model; under load, requests that
    # arrive while the model is busy are grouped, up to max_batch_size images. A batch of
    # several may wait up to batch_timeout_ms for more; 0 (measured best, see the README) takes
    # just what queued while the model was busy.
    max_batch_size: int = Field(64, ge=1, le=1024)
    batch_timeout_ms: float = Field(0.0, ge=0, le=1000)
    # A safety net behind admission control, which keeps the queue far shorter: 4,096 images
    # are 13 MB of model input.
    max_queue_size: int = Field(4096, ge=1)
    # Admission control: a worker admits as many inference requests as it completes in this
    # many milliseconds (learnt under load), so none of them waits longer than about that. One
    # more waits for a free slot at most this long, then gets 503 with Retry-After. A second is
    # a wait a person accepts, and well above what 64 connections of photos make anyone wait,
    # so only a real flood is refused. 0 turns it off.
    overload_budget_ms: float = Field(1000.0, ge=0, le=60_000)
    request_timeout_s: float = Field(10.0, gt=0, le=600)

    # Limits on what a client may send.
    max_upload_bytes: int = Field(10 * MiB, ge=1024)
    max_batch_upload_bytes: int = Field(64 * MiB, ge=1024)
    max_batch_files: int = Field(64, ge=1, le=1024)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=784)
    # A request body must arrive within body_timeout_s in all, with no pause between chunks
    # longer than body_idle_timeout_s; otherwise 408.
    body_timeout_s: float = Field(10.0, gt=0, le=600)
    body_idle_timeout_s: float = Field(5.0, gt=0, le=600)
    # Browser pages on these origins may call the API (CORS), e.g. '["https://app.example"]';
    # none by default.
    cors_allow_origins: list[str] = []

    # An upload the version's detector says is not one digit (a letter, a photo, "42"): answered
    # with `is_digit: false` and the reason, or refused with 422 and the reason as the code;
    # `off` does not run the detector (is_digit is null), for the last few per cent of speed.
    non_digits: Literal["answer", "refuse", "off"] = "answer"

    # What runs the model: LiteRT with the version's int8 weights when they passed the check on
    # the test split, else LiteRT compiled from the SavedModel at start-up (checked against it),
    # else the SavedModel's TensorFlow signature. Asking for a slower one skips the faster.
    runtime: Runtime = Runtime.LITERT_INT8
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
