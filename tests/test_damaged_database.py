"""A damaged lorad.db: one line that names the file and what to do; a doctor finding; a
documented recovery that keeps the damaged file and touches nothing else."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from lorad.doctor.database import database
from lorad.settings import load_settings
from lorad.store import Store
from lorad.store.damage import quick_check, replay
from lorad.system.pidlock import PidLock
from tests.daemon_process import lorad
from tests.jobs import context


def damage(db: Path) -> None:
    """Overwrite a few bytes in the middle of the first table's page, as a bad disk would."""
    data = bytearray(db.read_bytes())
    data[4096 + 8: 4096 + 40] = b"\xff" * 32
    db.write_bytes(bytes(data))


@pytest.fixture
def damaged(config) -> tuple[Path, Path]:
    cfg = config()
    ctx = context(cfg)
    for index in range(20):
        ctx.store.create_job(f"subject{index}", state="done", stage="deliver")
    ctx.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ctx.store.close()
    damage(ctx.settings.db_path)
    assert quick_check(ctx.settings.db_path) is not None
    return cfg, ctx.settings.db_path


@pytest.mark.parametrize("command", [["status"], ["run"]])
def test_a_damaged_database_is_said_in_one_line_with_what_to_do(damaged, command):
    cfg, db = damaged
    result = lorad(cfg, *command, check=False, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "is damaged (" in line]
    assert len(lines) == 1 and str(db) in lines[0] and "lorad db recover" in lines[0]


def test_doctor_finds_the_damage(damaged):
    cfg, _db = damaged
    finding = database(load_settings(cfg))
    assert finding.status == "FAIL" and "lorad db recover" in finding.message


def test_db_recover_keeps_the_damaged_file_and_rebuilds_a_database_that_opens(damaged):
    cfg, db = damaged
    original = db.read_bytes()
    result = lorad(cfg, "db", "recover", check=False)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    # The sqlite3 command when it is there and its .recover succeeds, else iterdump: it says which.
    assert "rebuilt with iterdump" in said or (
        shutil.which("sqlite3") and "rebuilt with sqlite3 .recover" in said)
    [kept] = db.parent.glob("lorad.db.damaged-*")
    assert kept.read_bytes() == original
    assert quick_check(db) is None
    Store(db).jobs()  # opens, migrated, readable
    assert "nothing to recover" in lorad(cfg, "db", "recover").stdout


def test_db_recover_stops_while_the_daemon_runs(damaged):
    cfg, db = damaged
    lock = PidLock(db.parent)
    lock.acquire()
    try:
        result = lorad(cfg, "db", "recover", check=False)
    finally:
        lock.release()
    assert result.returncode == 1 and "already running" in result.stderr
    assert not list(db.parent.glob("lorad.db.damaged-*"))


def test_a_row_the_recovery_found_twice_is_kept_once_and_the_rest_goes_on(tmp_path):
    """`.recover` can find a row in two pages; the rebuild keeps one copy instead of failing."""
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    script = ("BEGIN TRANSACTION;\nCREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);\n"
              "INSERT INTO t VALUES(1,'a');\nINSERT INTO t VALUES(1,'a');\n"
              "INSERT INTO t VALUES(2,'b;\nc');\nCOMMIT;\n")
    assert replay(conn, script) == 1
    assert conn.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [(1, "a"),
                                                                            (2, "b;\nc")]
