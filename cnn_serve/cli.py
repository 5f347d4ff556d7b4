"""`cnn-serve`: one command for everything.

    cnn-serve serve                       # = python -m app (settings from CNN_SERVE_* variables)
    cnn-serve train [model.train options]
    cnn-serve evaluate [model.evaluate options]
    cnn-serve predict FILE... [--url URL] [--json] [--batch]

`predict` is a client of the public HTTP API, like any other. Its exit status: 0 when every
file was classified, 1 when some file could not be (unreadable, or refused by the service, whose
message is printed), 2 for a bad command line, 3 when the service cannot be reached or fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cnn_serve import predict

COMMANDS = {
    "serve": "serve the model over HTTP (python -m app)",
    "train": "train a model and export a new version (python -m model.train)",
    "evaluate": "evaluate a version, or realistic uploads (python -m model.evaluate)",
    "predict": "classify image files with a running service",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="cnn-serve",
        description="Serve a small image classifier, train it, evaluate it, and use it.",
        epilog="Run `cnn-serve COMMAND --help` for a command's options.",
    )
    parser.add_argument(
        "command", choices=COMMANDS, help=", ".join(f"{k}: {v}" for k, v in COMMANDS.items())
    )
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # Prints help, or the error and exit status 2.
    command, rest = argv[0], argv[1:]
    return _RUNNERS[command](rest)


def _serve(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="cnn-serve serve",
        description="Serve the model over HTTP. Every setting is a CNN_SERVE_* environment "
        "variable (see the README).",
    ).parse_args(argv)
    from app.__main__ import main as serve  # Deferred: the other commands need no server.

    serve()
    return 0


def _train(argv: list[str]) -> int:
    from model.train import main as train  # Deferred: importing TensorFlow takes seconds.

    sys.argv = ["cnn-serve train", *argv]
    train(argv)
    return 0


def _evaluate(argv: list[str]) -> int:
    from model.evaluate import main as evaluate

    sys.argv = ["cnn-serve evaluate", *argv]
    evaluate(argv)
    return 0


_RUNNERS: dict[str, Callable[[list[str]], int]] = {
    "serve": _serve,
    "train": _train,
    "evaluate": _evaluate,
    "predict": predict.main,
}
