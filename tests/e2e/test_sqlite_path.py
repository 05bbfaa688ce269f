"""`make run`'s database: the portable (SQLite) paths of the queue, the API and the builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("sqlite_path.py")


def test_the_demo_database_serves_the_whole_review_loop(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (
        "ok: 6 reviews, 1 expired lease, a ready version of 3 rows, an import of 2 items, "
        "a heartbeat before a submit, a dead claim not handed back, a read during a write"
    ) in run.stdout
    assert (tmp_path / "demo.sqlite3").stat().st_size > 0
