"""`python -m cnn_serve`: the same as the `cnn-serve` command."""

from cnn_serve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
