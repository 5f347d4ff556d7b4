"""The `cnn-serve` command: its help, its dispatch, and `predict` against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.imaging import encode, paper_photo, png
from tests.server import free_port, running_server

COMMAND = [sys.executable, "-m", "cnn_serve"]


def cnn_serve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_the_console_script_is_declared():
    scripts = {entry.name: entry.value for entry in metadata.entry_points(group="console_scripts")}
    assert scripts["cnn-serve"] == "cnn_serve.cli:main"


def test_help_everywhere():
    top = cnn_serve("--help")
    assert top.returncode == 0
    for command in ("serve", "train", "evaluate", "predict"):
        assert command in top.stdout
    for command, expected in (("serve", "CNN_SERVE_"), ("predict", "Exit status")):
        result = cnn_serve(command, "--help")
        assert result.returncode == 0, result.stderr
        assert expected in " ".join(result.stdout.split())


@pytest.mark.slow
@pytest.mark.parametrize(("command", "expected"), [("train", "--arch"), ("evaluate", "--uploads")])
def test_train_and_evaluate_are_the_model_scripts(command, expected):
    result = cnn_serve(command, "--help")
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_an_unknown_command_is_a_usage_error():
    result = cnn_serve("fly")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits) -> dict[str, Path]:
    images, labels = digits
    folder = tmp_path_factory.mktemp("files")
    paths = {}
    for index in range(4):
        paths[f"{labels[index]}-{index}.png"] = folder / f"{labels[index]}-{index}.png"
        paths[f"{labels[index]}-{index}.png"].write_bytes(png(images[index]))
    photo = folder / f"{labels[4]}-photo.jpg"
    photo.write_bytes(encode(paper_photo(images[4], side=400), "JPEG", quality=85))
    paths[photo.name] = photo
    (folder / "notes.txt").write_text("not an image")
    paths["notes.txt"] = folder / "notes.txt"
    return paths


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("server") / "server.log") as base_url:
        yield base_url


def expected_label(path: Path) -> str:
    return path.name.split("-")[0]


@pytest.mark.slow
def test_predict_prints_a_table(files, url):
    images = [path for name, path in files.items() if name != "notes.txt"]
    result = cnn_serve("predict", "--url", url, *map(str, images))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["label", "confidence", "file"]
    for line, path in zip(lines[1:], images, strict=True):
        label, confidence, name = line.split()
        assert label == expected_label(path)
        assert confidence.endswith("%")
        assert name == str(path)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batch"])
def test_predict_json_passes_the_services_errors_through(files, url, batch):
    paths = [str(path) for path in files.values()] + ["missing.png"]
    result = cnn_serve("predict", "--url", url, "--json", *(["--batch"] if batch else []), *paths)
    assert result.returncode == 1
    outcomes = json.loads(result.stdout)
    assert [outcome["file"] for outcome in outcomes] == paths
    by_file = {outcome["file"]: outcome for outcome in outcomes}
    assert by_file[str(files["notes.txt"])]["error"]["code"] == "invalid_image"
    assert by_file["missing.png"]["error"]["code"] == "unreadable_file"
    for name, path in files.items():
        if name != "notes.txt":
            assert by_file[str(path)]["label"] == expected_label(path)


@pytest.mark.slow
def test_predict_reports_progress_on_request(files, url):
    result = cnn_serve("predict", "--url", url, "--progress", *map(str, files.values()))
    assert f"{len(files)}/{len(files)} files" in result.stderr


def test_an_unreachable_service_is_exit_status_3(files):
    url = f"http://127.0.0.1:{free_port()}"
    result = cnn_serve("predict", "--url", url, str(files["notes.txt"]))
    assert result.returncode == 3
    assert "cannot reach" in result.stderr
