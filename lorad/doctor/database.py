"""The job database: PRAGMA quick_check on state_dir/lorad.db (read-only; absent is fine)."""

from __future__ import annotations

from lorad.doctor.check import FAIL, OK, Check
from lorad.settings import Settings
from lorad.store.damage import quick_check


def database(settings: Settings) -> Check:
    db = settings.db_path
    if not db.exists():
        return Check(OK, "database", f"{db} does not exist yet; lorad run creates it")
    found = quick_check(db)
    if found is None:
        return Check(OK, "database", f"{db} passes PRAGMA quick_check")
    return Check(FAIL, "database", f"{db} is damaged ({found}): stop lorad, keep a copy of the "
                                   "file, then run `lorad db recover`")
