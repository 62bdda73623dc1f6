"""The loss curve as inline SVG, drawn on the server: no chart library, no script."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT, PAD = 640, 180, 36


def steps_along(points: list[dict[str, Any]]) -> list[int]:
    """Steps counted from the start of the job: a run that counts from 1 again (a restart from an
    epoch's weights) continues after the previous run's last step."""
    along, offset, last = [], 0, 0
    for point in points:
        step = point["step"]
        if step + offset < last:
            offset = last
        last = step + offset
        along.append(last)
    return along


def loss_svg(points: list[dict[str, Any]]) -> str:
    """An SVG of loss against step, with its range written on the axes; "" without points."""
    if len(points) < 2:
        return ""
    xs, ys = steps_along(points), [float(p["loss"]) for p in points]
    x0, x1 = xs[0], max(xs[-1], xs[0] + 1)
    y0, y1 = min(ys), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1e-6

    def at(x: float, y: float) -> str:
        px = PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)
        py = HEIGHT - PAD + (y0 - y) / (y1 - y0) * (HEIGHT - 2 * PAD)
        return f"{px:.1f},{py:.1f}"

    line = " ".join(at(x, y) for x, y in zip(xs, ys, strict=True))
    epochs = {}
    for x, point in zip(xs, points, strict=True):
        if point.get("epoch") and point["epoch"] not in epochs:
            epochs[point["epoch"]] = x
    marks = "".join(
        f'<line x1="{at(x, y0).split(",")[0]}" y1="{PAD}" x2="{at(x, y0).split(",")[0]}" '
        f'y2="{HEIGHT - PAD}" class="epoch"/><text x="{at(x, y0).split(",")[0]}" y="{PAD - 6}">'
        f'e{escape(str(epoch))}</text>' for epoch, x in sorted(epochs.items()))
    return (
        f'<svg class="loss" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="loss per step">{marks}'
        f'<polyline points="{line}"/>'
        f'<text x="2" y="{PAD}">{y1:.4g}</text><text x="2" y="{HEIGHT - PAD}">{y0:.4g}</text>'
        f'<text x="{PAD}" y="{HEIGHT - 8}">step {x0}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">step {x1}</text></svg>')
