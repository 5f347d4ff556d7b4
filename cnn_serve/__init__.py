"""The `cnn-serve` command: serve, train, evaluate, and classify files with a running service."""
