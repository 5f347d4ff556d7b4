"""One real server for the hostile suite, with short body deadlines so the tests stay quick."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server import running_server

BODY_TIMEOUT_S = 2.0
BODY_IDLE_TIMEOUT_S = 1.0


@pytest.fixture(scope="package")
def hostile_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with running_server(
        log,
        body_timeout_s=str(BODY_TIMEOUT_S),
        body_idle_timeout_s=str(BODY_IDLE_TIMEOUT_S),
        max_upload_bytes="2000000",
    ) as url:
        yield url
    text = log.read_text()
    assert "Traceback" not in text, text
