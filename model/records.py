"""Files a model tool writes into a version directory, written so that a reader (the service's
reloader, say) never sees half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.model_format import METADATA_FILE, read_metadata


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def record_in_metadata(version_dir: Path, key: str, record: Any) -> None:
    """Set `key` of the version's `metadata.json` to `record`, keeping everything else."""
    metadata = read_metadata(version_dir)
    metadata[key] = record
    write_atomically(version_dir / METADATA_FILE, (json.dumps(metadata, indent=2) + "\n").encode())
