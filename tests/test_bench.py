"""The benchmark's own measurements, checked against processes whose work is known."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.__main__ import _children, cpu_s


def _burner(seconds: float, done: Path) -> str:
    """Code that burns `seconds` of CPU time (not wall time: a busy machine does not change it),
    then creates `done` and sleeps until killed."""
    return (
        "import time\n"
        "start = time.process_time()\n"
        f"while time.process_time() - start < {seconds}: pass\n"
        f"open({str(done)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )


def test_server_cpu_counts_every_process_of_a_tree(tmp_path: Path):
    parent_done, child_done = tmp_path / "parent", tmp_path / "child"
    # A parent that starts a child (as uvicorn's supervisor starts its workers), both burning.
    parent_code = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {_burner(0.3, child_done)!r}])\n"
        + _burner(0.2, parent_done)
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        deadline = time.monotonic() + 30
        while not (parent_done.exists() and child_done.exists()):
            assert time.monotonic() < deadline, "the burners did not finish"
            time.sleep(0.05)
        # 0.5 s burnt, plus two interpreters' start-up.
        used_s = cpu_s(parent.pid)
        assert 0.5 <= used_s <= 0.9, used_s
    finally:
        for child in _children(parent.pid):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
