"""`python -m app.healthcheck`: exit 0 when the local service reports ready (container probe)."""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("CNN_SERVE_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=3) as reply:
            return 0 if reply.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
