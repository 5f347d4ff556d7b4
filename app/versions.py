"""Which model versions are on disk, which are complete, and which the policy says to serve.

A version is a directory named by its number under `<base>/<name>/`. One still being copied in
(`saved_model.pb` before `variables/`, or the metadata before the detector it names) is not
complete; one whose files changed since the last look is not settled yet. Only complete, settled
versions are loaded. The safe way to publish
is to write the version under a temporary name (one that is not a number, e.g. `.3.partial`)
and rename it into place, which is atomic; `model.train` does that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.detector import DETECTOR_FILE
from app.model_format import METADATA_FILE, ModelLoadError

SAVED_MODEL_FILE = "saved_model.pb"
VARIABLES_INDEX = Path("variables") / "variables.index"


@dataclass(frozen=True)
class VersionOnDisk:
    number: int
    path: Path
    complete: bool
    fingerprint: tuple[tuple[str, int, int], ...]  # (file, size, mtime_ns) of every file


def scan(model_dir: Path) -> list[VersionOnDisk]:
    """Every numbered directory under `model_dir`, oldest first."""
    if not model_dir.is_dir():
        return []
    versions = []
    for path in model_dir.iterdir():
        if not path.name.isdigit() or not path.is_dir():
            continue
        files = sorted(item for item in path.rglob("*") if item.is_file())
        fingerprint = tuple(
            (str(item.relative_to(path)), item.stat().st_size, item.stat().st_mtime_ns)
            for item in files
        )
        complete = all(
            (path / required).is_file()
            for required in (SAVED_MODEL_FILE, VARIABLES_INDEX, METADATA_FILE)
        ) and _detector_present(path)
        versions.append(VersionOnDisk(int(path.name), path, complete, fingerprint))
    return sorted(versions, key=lambda version: version.number)


def _detector_present(version_dir: Path) -> bool:
    """False while the metadata names a detector whose file is not there yet (or while the
    metadata cannot be read): a version without the detector it was published with would be
    refused."""
    try:
        metadata = json.loads((version_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    names_one = isinstance(metadata, dict) and metadata.get("detector") is not None
    return not names_one or (version_dir / DETECTOR_FILE).is_file()


def wanted(
    on_disk: Sequence[VersionOnDisk],
    *,
    pinned: int | None,
    versions_served: int,
    refused: Iterable[int] = (),
) -> list[VersionOnDisk]:
    """The versions to serve, newest first: the pinned one, or the newest `versions_served`
    of the complete ones that were not refused (found broken)."""
    refused = set(refused)
    usable = [v for v in on_disk if v.complete and v.number not in refused]
    if pinned is not None:
        return [v for v in usable if v.number == pinned]
    return sorted(usable, key=lambda v: -v.number)[:versions_served]


def read_labels(path: Path | None) -> dict[str, int]:
    """Version labels (`{"stable": 3, "canary": 4}`) from a JSON file; none without one."""
    if path is None:
        return {}
    try:
        labels = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"the version labels file {path} is unreadable: {error}") from None
    if not isinstance(labels, dict) or not all(
        isinstance(name, str) and isinstance(number, int) and not isinstance(number, bool)
        for name, number in labels.items()
    ):
        raise ModelLoadError(f"{path} must map label names to version numbers")
    return dict(labels)
