"""`make run`, the README's first command: a port already taken is said before any work."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_taken_port_is_said_before_migrating_or_seeding(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = tmp_path / "demo.sqlite3"
        run = subprocess.run(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if k != "MAKEFLAGS"},
                "DEMO_DATABASE_URL": f"sqlite:///{demo}",
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run.returncode != 0
    assert f"Port {port} is taken: make run PORT=<another>" in run.stderr
    assert not demo.exists(), "the demo database was made before the port was checked"
