"""`cnn-serve predict FILE...`: classify image files with a running service, over its HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from cnn_serve.retrying import RetryAfterAsyncTransport

DEFAULT_URL = "http://127.0.0.1:8000"
CONCURRENCY = 8
TIMEOUT_S = 60

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


class ServiceUnavailableError(Exception):
    """The service cannot be reached, or failed on its side (5xx)."""


@dataclass(frozen=True)
class Outcome:
    file: str
    prediction: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        if self.prediction is not None:
            return {"file": self.file, **self.prediction}
        return {"file": self.file, "error": self.error}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cnn-serve predict",
        description="Classify image files with a running cnn-serve. Exit status: 0 every file "
        "classified, 1 some file not (its error is shown), 2 bad command line, 3 the service "
        "cannot be reached or failed.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="image files")
    parser.add_argument(
        "--url",
        default=os.environ.get("CNN_SERVE_URL", DEFAULT_URL),
        help=f"the service (default: $CNN_SERVE_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--batch", action="store_true", help="send the files in /predict/batch requests"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    progress = (
        sys.stderr if (args.progress or (args.progress is None and sys.stderr.isatty())) else None
    )
    try:
        outcomes = asyncio.run(classify_files(args.url, args.files, args.batch, progress))
    except ServiceUnavailableError as error:
        print(f"cnn-serve predict: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.json:
        print(json.dumps([outcome.as_json() for outcome in outcomes], indent=2))
    else:
        print_table(outcomes, sys.stdout)
    return EXIT_OK if all(outcome.error is None for outcome in outcomes) else EXIT_SOME_FAILED


async def classify_files(
    url: str, files: list[Path], batch: bool, progress: TextIO | None
) -> list[Outcome]:
    transport = RetryAfterAsyncTransport()
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, transport=transport) as client:
        if batch:
            size = await _batch_limit(client)
            chunks = [files[start : start + size] for start in range(0, len(files), size)]
            outcomes = []
            for chunk in chunks:
                outcomes += await _classify_batch(client, chunk)
                _report(progress, len(outcomes), len(files))
            return outcomes
        done = 0
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(path: Path) -> Outcome:
            nonlocal done
            async with slots:
                outcome = await _classify_one(client, path)
            done += 1
            _report(progress, done, len(files))
            return outcome

        return list(await asyncio.gather(*(one(path) for path in files)))


async def _classify_one(client: httpx.AsyncClient, path: Path) -> Outcome:
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as error:
        return Outcome(
            str(path), error={"code": "unreadable_file", "message": error.strerror or str(error)}
        )
    response = await _post(
        client, "/predict", content=data, headers={"content-type": "application/octet-stream"}
    )
    body = response.json()
    if response.status_code == 200:
        return Outcome(str(path), prediction=body)
    return Outcome(str(path), error=body["error"])


async def _classify_batch(client: httpx.AsyncClient, paths: list[Path]) -> list[Outcome]:
    readable, outcomes = [], {}
    for path in paths:
        try:
            readable.append((path, await asyncio.to_thread(path.read_bytes)))
        except OSError as error:
            outcomes[path] = Outcome(
                str(path),
                error={"code": "unreadable_file", "message": error.strerror or str(error)},
            )
    if readable:
        files = [("files", (path.name, data)) for path, data in readable]
        response = await _post(client, "/predict/batch", files=files)
        body = response.json()
        if response.status_code != 200:
            for path, _ in readable:
                outcomes[path] = Outcome(str(path), error=body["error"])
        else:
            for (path, _), result in zip(readable, body["results"], strict=True):
                outcomes[path] = Outcome(str(path), result["prediction"], result["error"])
    return [outcomes[path] for path in paths]


async def _batch_limit(client: httpx.AsyncClient) -> int:
    response = await _get(client, "/model")
    return int(response.json()["limits"]["max_batch_files"])


async def _post(client: httpx.AsyncClient, path: str, **request: Any) -> httpx.Response:
    try:
        response = await client.post(path, **request)
    except httpx.HTTPError as error:
        raise ServiceUnavailableError(f"cannot reach {client.base_url}: {error}") from None
    return _checked(response)


async def _get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    try:
        response = await client.get(path)
    except httpx.HTTPError as error:
        raise ServiceUnavailableError(f"cannot reach {client.base_url}: {error}") from None
    return _checked(response)


def _checked(response: httpx.Response) -> httpx.Response:
    """A 5xx is the service's failure, not the file's: give up (status 3) with its message."""
    if response.status_code >= 500:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise ServiceUnavailableError(f"the service answered {response.status_code}: {message}")
    return response


def _report(progress: TextIO | None, done: int, total: int) -> None:
    if progress is not None and total > 1:
        progress.write(f"\r{done}/{total} files")
        if done == total:
            progress.write("\n")
        progress.flush()


def print_table(outcomes: list[Outcome], out: TextIO) -> None:
    out.write(f"{'label':<8}{'confidence':>11}  file\n")
    for outcome in outcomes:
        if outcome.prediction is not None:
            label, confidence = outcome.prediction["label"], outcome.prediction["confidence"]
            out.write(f"{label:<8}{confidence:>10.2%}  {outcome.file}\n")
        else:
            assert outcome.error is not None
            out.write(f"{'-':<8}{'-':>11}  {outcome.file}: {outcome.error['message']}\n")
