"""Running the CLI in a child process and killing it mid-run (the resume-after-kill tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: ``python -c CLI ARGS...`` runs ``hogwild ARGS...`` with this interpreter
CLI = "import sys; from hogwild.cli import main; sys.argv = ['hogwild'] + sys.argv[1:]; main()"


def kill_after_rows(args: list[str], results: Path, rows: int = 2, wait_s: float = 240.0) -> None:
    """Start ``hogwild ARGS`` in its own process group and SIGKILL the group once ``results``
    holds ``rows`` lines; fails when the command ends (or ``wait_s`` passes) first."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + wait_s
        while time.time() < deadline and proc.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= rows:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the eval ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
