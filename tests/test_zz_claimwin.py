import shutil, sqlite3, time
from tests.daemon_process import DaemonProcess
from tests.photos import make_photos

def test_window(tmp_path, config):
    cfg = config(caption={"enabled": False})
    d = DaemonProcess(cfg, tmp_path / "d.log").start()
    time.sleep(2)
    db = tmp_path / "state" / "lorad.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    for i in range(5):
        src = tmp_path / "staged" / f"s{i}"
        make_photos(src, 4, size=(256, 256), seed=i)
        shutil.copytree(src, tmp_path / "inbox" / f"s{i}")
        seen = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            rows = conn.execute("select state from jobs where name=?", (f"s{i}",)).fetchall()
            if rows:
                seen.append((round(time.monotonic() - t0, 4), rows[0][0]))
                if rows[0][0] != "claiming":
                    break
            time.sleep(0.001)
        print(i, seen[:3], seen[-1:])
    d.stop()
