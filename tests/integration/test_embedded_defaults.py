"""The zero-setup path: SQLite and kombu's filesystem broker, driven by `manage.py demo`."""

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_demo_on_sqlite_and_embedded_broker(tmp_path, standins):
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VERSUS_VAR_DIR"] = str(tmp_path / "var")
    env["VERSUS_STANDIN_DIR"] = os.environ["VERSUS_STANDIN_DIR"]

    completed = subprocess.run(
        [sys.executable, "manage.py", "demo", "--limit", "2", "--port", "18765", "--timeout", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )

    output = completed.stdout
    assert completed.returncode == 0, f"{output}\n{completed.stderr[-4000:]}"
    assert "succeeded" in output
    assert "kosmos-2-patch14-224:" in output
    assert "/100" in output
    assert "Ranking:" in output
    assert "Verdicts:" in output
    assert "[draft]" in output
    assert "stand-in checkpoints" in output
    assert "Stopped worker" in output
    assert "Stopped web server" in output

    database = sqlite3.connect(tmp_path / "var" / "versus.sqlite3")
    assert database.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    states = database.execute("SELECT state FROM jobs_job").fetchall()
    assert states == [("succeeded",)]
    assert database.execute("SELECT COUNT(*) FROM jobs_result").fetchone()[0] == 4
    assert database.execute("SELECT COUNT(*) FROM evaluation_verdict").fetchone()[0] == 1
