"""Version discovery and policies: complete and incomplete directories, pins, labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.model_format import ModelLoadError
from app.versions import read_labels, scan, wanted


def version(model_dir: Path, number: int, *, complete: bool = True) -> Path:
    path = model_dir / str(number)
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"graph")
    (path / "metadata.json").write_text('{"labels": ["a", "b"]}')
    if complete:
        (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def test_scan_finds_numbered_directories_oldest_first(tmp_path: Path):
    for number in (10, 2, 1):
        version(tmp_path, number)
    (tmp_path / "latest").mkdir()  # Not a version.
    (tmp_path / ".3.partial").mkdir()  # Being written: ignored until renamed.
    (tmp_path / "7").write_text("a file, not a directory")
    assert [v.number for v in scan(tmp_path)] == [1, 2, 10]
    assert scan(tmp_path / "missing") == []


def test_a_half_copied_version_is_incomplete(tmp_path: Path):
    version(tmp_path, 1)
    version(tmp_path, 2, complete=False)  # saved_model.pb before variables/
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "saved_model.pb").write_bytes(b"x")
    complete = {v.number: v.complete for v in scan(tmp_path)}
    assert complete == {1: True, 2: False, 3: False}
    assert [v.number for v in wanted(scan(tmp_path), pinned=None, versions_served=1)] == [1]


def test_the_fingerprint_changes_with_the_files(tmp_path: Path):
    path = version(tmp_path, 1)
    before = scan(tmp_path)[0].fingerprint
    assert scan(tmp_path)[0].fingerprint == before
    (path / "saved_model.pb").write_bytes(b"a different graph")
    os.utime(path / "saved_model.pb", ns=(1, 1))
    assert scan(tmp_path)[0].fingerprint != before


@pytest.mark.parametrize(
    ("pinned", "served", "refused", "expected"),
    [
        (None, 1, [], [4]),
        (None, 2, [], [4, 3]),
        (None, 9, [], [4, 3, 1]),
        (None, 1, [4], [3]),  # The newest is broken: the one before it.
        (1, 1, [], [1]),
        (3, 2, [], [3]),  # A pin means that version alone.
        (2, 1, [], []),  # Pinned to a version that is not complete: none.
    ],
)
def test_policies(tmp_path: Path, pinned, served, refused, expected):
    for number in (1, 3, 4):
        version(tmp_path, number)
    version(tmp_path, 2, complete=False)
    chosen = wanted(scan(tmp_path), pinned=pinned, versions_served=served, refused=refused)
    assert [v.number for v in chosen] == expected


def test_labels(tmp_path: Path):
    assert read_labels(None) == {}
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"stable": 3, "canary": 4}))
    assert read_labels(path) == {"stable": 3, "canary": 4}
    for bad in ('{"stable": "3"}', '["stable"]', "{nope", '{"stable": true}'):
        path.write_text(bad)
        with pytest.raises(ModelLoadError):
            read_labels(path)
