"""Running the command line on a pseudo-terminal, as a person at a terminal would (progress shows there
only), or on pipes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

from tests.helpers.support import ROOT

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def run_cli_tty(*args: str, tty: bool, timeout: float = 120, columns: int = 140) -> tuple[int, str]:
    """``replicator ARGS`` with stdout and stderr on one pseudo-terminal (its output, escape codes
    removed), or on pipes (stderr only; stdout must not show progress either)."""
    cmd = [sys.executable, "-m", "replicator", *args]
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    if not tty:
        proc = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT, timeout=timeout, check=False)
        assert b"rows/s" not in proc.stdout and b"changes merged" not in proc.stdout
        return proc.returncode, proc.stderr.decode()
    leader, follower = os.openpty()
    proc = subprocess.Popen(cmd, stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait(timeout=timeout)
    reader.join(timeout=10)
    os.close(leader)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))
