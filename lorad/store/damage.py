"""A damaged database: how it is recognised, said in one line, checked and recovered.

`lorad db recover` keeps the damaged file aside as `lorad.db.damaged-<time>` and rebuilds
lorad.db from what can be read: with the sqlite3 command's `.recover` when it is installed (it
reads past damaged pages), else with Python's `Connection.iterdump()` (which stops at the first
damaged table). Nothing else (inbox, work area, outbox) is touched.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lorad.system.pidlock import PidLock

DAMAGE_TEXT = ("malformed", "not a database", "file is encrypted", "disk i/o error")


def is_damage(error: BaseException) -> bool:
    return isinstance(error, sqlite3.DatabaseError) and any(
        text in str(error).lower() for text in DAMAGE_TEXT)


def damage_line(db: Path, error: BaseException) -> str:
    return (f"the database {db} is damaged ({error}): stop lorad, keep a copy of the file, then "
            f"run `lorad db recover` (see README, \"A damaged database\")")


def quick_check(db: Path) -> str | None:
    """None when PRAGMA quick_check passes, else what it (or opening the file) says."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        return str(error)
    return None if rows == ["ok"] else " ".join("; ".join(rows[:3]).split())


@dataclass
class Recovered:
    kept: Path  # the damaged file, set aside
    method: str  # "sqlite3 .recover" or "iterdump"
    skipped: int = 0  # rows the dump held twice (a recovery can find a row in two pages)


def _dump(db: Path) -> tuple[str, str]:
    cli = shutil.which("sqlite3")
    if cli:
        done = subprocess.run([cli, str(db), ".recover"], capture_output=True, text=True,
                              check=False)
        if done.returncode == 0:
            return done.stdout, "sqlite3 .recover"
    conn = sqlite3.connect(db)
    lines = []
    try:
        for line in conn.iterdump():
            lines.append(line)
    except sqlite3.DatabaseError:  # what was read before the damage is kept
        lines.append("COMMIT;" if lines else "")
    finally:
        conn.close()
    return "\n".join(lines), "iterdump"


def recover(state_dir: Path, db: Path) -> Recovered:
    """Rebuild db from its readable contents; raises AlreadyRunning while a daemon runs."""
    lock = PidLock(state_dir)
    lock.acquire()
    try:
        script, method = _dump(db)
        kept = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        fresh = db.with_name(f".{db.name}.recovering")
        fresh.unlink(missing_ok=True)
        conn = sqlite3.connect(fresh, isolation_level=None)  # the dump's own BEGIN and COMMIT
        try:
            skipped = replay(conn, script)
        finally:
            conn.close()
        db.rename(kept)
        for suffix in ("-wal", "-shm"):  # they belong to the damaged file
            side = db.with_name(db.name + suffix)
            if side.exists():
                side.rename(kept.with_name(kept.name + suffix))
        fresh.rename(db)
    finally:
        lock.release()
    return Recovered(kept, method, skipped)


def replay(conn: sqlite3.Connection, script: str) -> int:
    """Run the dump one statement at a time. A statement that breaks a constraint (a row the
    recovery found twice) is skipped, the others go on; how many were skipped."""
    skipped, statement = 0, ""
    for line in script.splitlines(keepends=True):
        statement += line
        if not sqlite3.complete_statement(statement):
            continue
        try:
            conn.execute(statement)
        except sqlite3.IntegrityError:
            skipped += 1
        statement = ""
    if conn.in_transaction:
        conn.execute("COMMIT")
    return skipped

