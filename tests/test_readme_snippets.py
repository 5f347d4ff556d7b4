"""Every shell and Python snippet in the README's "Use it" and "From existing clients"
sections, run as written (the port aside) against the real server."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.imaging import encode, paper_photo, png
from tests.server import free_port, running_server

pytestmark = pytest.mark.slow

SECTIONS = ("## Use it", "## From existing clients")
BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text()
    found = []
    for heading in SECTIONS:
        start = readme.index(heading)
        end = readme.find("\n## ", start + len(heading))
        section = readme[start : end if end != -1 else None]
        for language, code in BLOCK.findall(section):
            if language == "python":
                found.append(("python", code))
            else:
                found += [
                    ("sh", line)
                    for line in code.splitlines()
                    if line.startswith(("curl", "cnn-serve"))
                ]
    return found


SNIPPETS = snippets()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """The files the snippets name, with a 7 in digit.png."""
    images, labels = digits
    seven = int(list(labels).index(7))
    folder = tmp_path_factory.mktemp("snippets")
    (folder / "digit.png").write_bytes(png(images[seven]))
    (folder / "a.png").write_bytes(png(images[1]))
    photo = encode(paper_photo(images[2], side=400), "JPEG", quality=85)
    (folder / "b.jpg").write_bytes(photo)
    (folder / "photo.jpg").write_bytes(photo)
    (folder / "scans").mkdir()
    for index in range(3):
        (folder / "scans" / f"{index}.png").write_bytes(png(images[10 + index]))
    return folder


@pytest.fixture(scope="module")
def addresses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """host:port of REST and of gRPC."""
    grpc_port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log, grpc_port=str(grpc_port)) as url:
        yield url.removeprefix("http://"), f"127.0.0.1:{grpc_port}"


def test_the_readme_has_snippets_for_every_client():
    kinds = [code for _, code in SNIPPETS]
    assert any("/v1/models/mnist:predict" in code for code in kinds)
    assert any("/v2/models/mnist/infer" in code for code in kinds)
    assert any("tritonclient.http" in code for code in kinds)
    assert any("tritonclient.grpc" in code for code in kinds)
    assert any("PredictionServiceStub" in code for code in kinds)
    assert any("grpc_health" in code for code in kinds)
    assert any("httpx" in code for code in kinds)


@pytest.mark.parametrize(
    ("language", "code"), SNIPPETS, ids=[f"{i}-{lang}" for i, (lang, _) in enumerate(SNIPPETS)]
)
def test_snippet_runs(language: str, code: str, workdir: Path, addresses: tuple[str, str]):
    address, grpc_address = addresses
    code = code.replace("localhost:8000", address).replace("localhost:8500", grpc_address)
    if code.startswith("cnn-serve"):  # The console script, as `make install` puts it in .venv/bin.
        code = (
            f"CNN_SERVE_URL=http://{address} {shlex.quote(sys.executable)} -m cnn_serve"
            + code.removeprefix("cnn-serve")
        )
    if language == "python":
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return
    tools = {word for word in ("jq",) if re.search(rf"\b{word}\b", code)}
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} must be installed in CI (.ci/run installs them)")
        pytest.skip(f"{missing} not installed here")
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", code],
        cwd=workdir,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    if output.startswith(b"{"):
        body = json.loads(output)
        assert "error" not in body, body
