"""Setting keys in a commented lorad.toml by editing its lines, so that its comments stay."""

from __future__ import annotations

import re

HEADER = re.compile(r"^\s*\[([\w.]+)\]")


def key_line(key: str) -> re.Pattern[str]:
    """`key = value  # comment`, maybe commented out; the value a string, a list or a word."""
    return re.compile(rf'^#?\s*{re.escape(key)}\s*=\s*("[^"]*"|\[[^\]]*\]|[^#\s]+)(?P<rest>.*)$')


def set_key(text: str, table: str, key: str, value: str) -> str:
    """`key = value` (value already TOML) in `table` ("" for the top level): the existing line,
    set or commented out, is replaced keeping its comment; else the line is added (and the
    table, at the end)."""
    lines = text.splitlines()
    current, end = "", None
    pattern = key_line(key)
    for index, line in enumerate(lines):
        if header := HEADER.match(line):
            if current == table and end is None:
                end = index
            current = header.group(1)
            continue
        if current == table and (found := pattern.match(line.strip())):
            lines[index] = f"{key} = {value}{found.group('rest')}"
            return "\n".join(lines) + "\n"
    if table and table not in {m.group(1) for m in map(HEADER.match, lines) if m}:
        lines += ["", f"[{table}]"]
        end = None
    if end is None:
        lines.append(f"{key} = {value}")
    else:
        while end > 0 and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def toml_string(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
