"""Keeps the registry in step with the model directory: new versions go live by themselves.

Every `CNN_SERVE_MODEL_POLL_INTERVAL_S` (and on SIGHUP, or a KServe repository `load`), the
directory is scanned. A version the policy wants that is complete and settled (its files did
not change since the last scan) is loaded off the event loop: compiled to LiteRT and checked
against TensorFlow, checked against its metadata, warmed up. Only then does it start answering;
versions no longer wanted are retired, and each is released once its queued requests are
answered. A version that fails to load is logged, counted and reported in its status, keeps
nothing from serving, and is retried only when its files change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from app import metrics
from app.config import Settings
from app.model_format import METADATA_FILE, ModelLoadError
from app.models import LoadedModel, ModelRegistry, load_model
from app.versions import (
    SAVED_MODEL_FILE,
    VARIABLES_INDEX,
    VersionOnDisk,
    read_labels,
    scan,
    wanted,
)

logger = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


class Reloader:
    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        warm_up: Callable[[LoadedModel], None],
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.warm_up = warm_up
        self.unloaded = False
        self.outcomes: Counter[str] = Counter()  # Loads by result, for the metrics.
        self._refused: dict[int, Fingerprint] = {}  # Broken versions, until their files change.
        self._seen: dict[int, Fingerprint] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Serve what the policy wants, trying older versions if the newest is broken; with
        nothing loadable, `ModelLoadError`."""
        await self.sync(settled_only=False)
        while not self.registry.served:
            if not await self.sync(settled_only=False):
                model_dir = self.settings.model_dir
                if not self.registry.statuses:
                    incomplete = [str(v.number) for v in scan(model_dir) if not v.complete]
                    why = (
                        f"; incomplete: version {', '.join(incomplete)} lacks {SAVED_MODEL_FILE}, "
                        f"{VARIABLES_INDEX} or {METADATA_FILE}"
                        if incomplete
                        else ""
                    )
                    raise ModelLoadError(
                        f"no model versions under {model_dir} (expected {model_dir}/1/ ...){why}"
                    )
                raise ModelLoadError(
                    f"no loadable model version under {model_dir}: "
                    + "; ".join(
                        f"version {number}: {status.error_message}"
                        for number, status in self.registry.statuses.items()
                    )
                )

    async def poll(self) -> None:
        interval = self.settings.model_poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:  # The service goes on with what it serves; the next poll retries.
                logger.exception("Scanning %s failed", self.settings.model_dir)

    async def sync(self, settled_only: bool = True) -> bool:
        """One pass over the directory; whether anything was newly loaded."""
        async with self._lock:
            if self.unloaded:
                return False
            self.registry.labels = read_labels(self.settings.model_labels_file)
            on_disk = await asyncio.to_thread(scan, self.settings.model_dir)
            candidates = [v for v in on_disk if not settled_only or self._settled(v)]
            self._seen = {v.number: v.fingerprint for v in on_disk}
            still_refused = [
                v.number for v in on_disk if self._refused.get(v.number) == v.fingerprint
            ]
            targets = wanted(
                candidates,
                pinned=self.settings.model_version,
                versions_served=self.settings.model_versions_served,
                refused=still_refused,
            )
            loaded_any = False
            for version in targets:
                if version.number not in self.registry.served:
                    loaded_any |= await self._load(version)
            if self.registry.served and targets:
                keep = {v.number for v in targets} | set(self.registry.labels.values())
                for number in list(self.registry.served):
                    if number not in keep and len(self.registry.served) > 1:
                        self.registry.retire(number)
                        logger.info("Retired %s version %d", self.registry.name, number)
            return loaded_any

    async def unload(self) -> None:
        async with self._lock:
            self.unloaded = True
            for number in list(self.registry.served):
                self.registry.retire(number)

    async def load(self) -> None:
        self.unloaded = False
        await self.sync(settled_only=False)

    def _settled(self, version: VersionOnDisk) -> bool:
        return version.complete and self._seen.get(version.number) == version.fingerprint

    async def _load(self, version: VersionOnDisk) -> bool:
        self.registry.mark_loading(version.number)
        try:
            model = await asyncio.to_thread(load_model, version.path, self.settings)
            await asyncio.to_thread(self.warm_up, model)
        except ModelLoadError as error:
            self._refused[version.number] = version.fingerprint
            self.registry.refuse(version.number, str(error))
            self.outcomes["failed"] += 1
            metrics.RELOADS.labels("failed").inc()
            logger.error("Refused %s version %d: %s", self.registry.name, version.number, error)
            return False
        self.registry.install(model)
        self.outcomes["loaded"] += 1
        metrics.RELOADS.labels("loaded").inc()
        logger.info(
            "Serving %s version %d from %s with %s",
            model.name,
            model.version,
            version.path,
            model.runtime.value,
        )
        return True
