"""Aspect-ratio buckets against the resolution: what Kohya demands, and how lorad satisfies it.

With --enable_bucket, Kohya (sd-scripts library/train_util.py, adjust_min_max_bucket_reso_by_steps)
first rounds min_bucket_reso down and max_bucket_reso up to multiples of bucket_reso_steps, then
asserts min_bucket_reso <= min(resolution) and max(resolution) <= max_bucket_reso, and exits.
lorad widens limits that nobody chose against this resolution (lorad's preset, Kohya's defaults,
or a GUI preset's limits under a resolution set later, say by the subject), and refuses limits
that a GUI preset chose at the same layer as the resolution, or after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Kohya's defaults when an option is not given (kohya-args.md).
KOHYA_DEFAULTS = {"min_bucket_reso": 256, "max_bucket_reso": 1024, "bucket_reso_steps": 64}
KEYS = ("resolution", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps")


class BucketError(Exception):
    """The bucket limits and the resolution, both chosen by a person, contradict each other."""


@dataclass(frozen=True)
class Source:
    """Who set an argument: the layer's place (later layers win) and how to name it."""

    rank: int
    label: str  # "kohya.preset (/etc/lorad/gui.json)", "lora.toml [train]", "lorad's sd15 preset"
    chosen: bool  # a person wrote it (a GUI preset, lora.toml), not lorad's preset or Kohya
    gui: bool = False  # a kohya_ss GUI file: its resolution field is called max_resolution

    def key(self, name: str) -> str:
        return "max_resolution" if self.gui and name == "resolution" else name


KOHYA_DEFAULT = Source(-1, "Kohya's default", chosen=False)


def sources(layers: Sequence[tuple[Source, Mapping[str, Any]]]) -> dict[str, Source]:
    """For each bucket argument, the layer that set it last (None in a layer unsets it)."""
    found: dict[str, Source] = {}
    for source, layer in layers:
        for name in KEYS:
            if name in layer:
                if layer[name] is None:
                    found.pop(name, None)
                else:
                    found[name] = source
    return found


def parse_resolution(value: Any) -> tuple[int, int] | None:
    """Kohya's reading of --resolution ("512" or "W,H"); None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        sides = [int(side) for side in str(value).split(",")]
    except ValueError:
        return None
    if len(sides) == 1:
        return sides[0], sides[0]
    return (sides[0], sides[1]) if len(sides) == 2 else None


def kohya_limits(args: Mapping[str, Any]) -> tuple[int, int, int]:
    """(min, max, steps) as Kohya uses them: defaults filled in, min rounded down, max up."""
    steps = int(args.get("bucket_reso_steps") or KOHYA_DEFAULTS["bucket_reso_steps"])
    low = int(args.get("min_bucket_reso") or KOHYA_DEFAULTS["min_bucket_reso"])
    high = int(args.get("max_bucket_reso") or KOHYA_DEFAULTS["max_bucket_reso"])
    return low - low % steps, _round_up(high, steps), steps


def _round_up(value: int, steps: int) -> int:
    return value if value % steps == 0 else value + steps - value % steps


def fit_buckets(args: dict[str, Any], origin: Mapping[str, Source]) -> list[str]:
    """Make args satisfy Kohya's assertion, in place; one note per limit changed.

    Raises BucketError, naming both keys and where each was set, when a limit that a GUI preset
    chose at the resolution's layer or after it excludes the resolution."""
    resolution = parse_resolution(args.get("resolution"))
    if not args.get("enable_bucket") or resolution is None:
        return []
    low, high, steps = kohya_limits(args)
    shown = args["resolution"]
    wanted = {"min_bucket_reso": (min(resolution) < low, min(resolution) - min(resolution) % steps,
                                  "lowered", "at most"),
              "max_bucket_reso": (max(resolution) > high, _round_up(max(resolution), steps),
                                  "raised", "at least")}
    notes = []
    for name, (outside, value, verb, bound) in wanted.items():
        if not outside:
            continue
        limit = origin.get(name, KOHYA_DEFAULT)
        res = origin.get("resolution", KOHYA_DEFAULT)
        was = args.get(name) or KOHYA_DEFAULTS[name]
        if limit.chosen and limit.rank >= res.rank:
            raise BucketError(
                f"{limit.label}: {limit.key(name)} = {was} does not hold {res.key('resolution')} "
                f"= {shown} ({res.label}); Kohya trains only when min_bucket_reso <= resolution "
                f"<= max_bucket_reso: set {limit.key(name)} to {bound} {value}, or change the "
                "resolution")
        args[name] = value
        notes.append(f"{name} {verb} from {was} ({limit.label}) to {value} to hold resolution "
                     f"{shown} ({res.label}): Kohya trains only when min_bucket_reso <= "
                     "resolution <= max_bucket_reso")
    return notes
