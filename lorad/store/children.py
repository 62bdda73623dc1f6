"""The records of running child process groups (trainers, captioners), so that those left by a
crash are found and reaped (system/children.py). Store has these methods (ChildRecords is one of
its bases)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any


class ChildRecords:
    """The children table, through the store's connection."""

    conn: sqlite3.Connection

    def add_child(self, pgid: int, started: int, kind: str, job_ids: list[int]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO children (pgid, started, kind, job_ids, at) "
            "VALUES (?, ?, ?, ?, ?)", (pgid, started, kind, json.dumps(job_ids), time.time()),
        )

    def remove_child(self, pgid: int) -> None:
        self.conn.execute("DELETE FROM children WHERE pgid = ?", (pgid,))

    def children(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM children").fetchall()]
