"""The notification queue's rows: queued with the job's change, sent and retried by
delivery/notify.py. Store has these methods (NotificationQueue is one of its bases)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any


class NotificationQueue:
    """The notifications table, through the store's connection."""

    conn: sqlite3.Connection

    def add_notification(self, job_id: int, event: str, title: str, body: str,
                         attach: str | None, tags: list[str]) -> int:
        cur = self.conn.execute(
            "INSERT INTO notifications (job_id, event, title, body, attach, tags, state, "
            "next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (job_id, event, title, body, attach, json.dumps(tags), time.time(), time.time()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def due_notifications(self, now: float) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM notifications WHERE state = 'pending' AND next_at <= ? ORDER BY id",
            (now,),
        ).fetchall()
        return [_notification(r) for r in rows]

    def next_notification_at(self) -> float | None:
        row = self.conn.execute(
            "SELECT MIN(next_at) FROM notifications WHERE state = 'pending'"
        ).fetchone()
        return row[0] if row else None

    def notifications(self, job_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM notifications WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()
        return [_notification(r) for r in rows]

    def update_notification(self, note_id: int, **values: Any) -> None:
        if "targets" in values:
            values["targets"] = json.dumps(values["targets"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in values)
        self.conn.execute(f"UPDATE notifications SET {sets} WHERE id = ?",
                          (*values.values(), note_id))


def _notification(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["tags"] = json.loads(data["tags"] or "[]")
    data["targets"] = json.loads(data["targets"] or "{}")
    return data
