"""A safetensors file's header, read and checked; the one place lorad reads one.

The format (huggingface/safetensors): 8 bytes giving N, an unsigned little-endian integer, then N
bytes of JSON (tensor name -> dtype, shape and data_offsets, plus an optional "__metadata__"),
then the tensors' bytes. N is at most 100,000,000, the format's own limit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

MAX_HEADER_BYTES = 100_000_000


class HeaderError(ValueError):
    """The file is not safetensors, or its header is cut short; the message says which."""


class Header(NamedTuple):
    table: dict[str, Any]  # tensor name -> its entry, and "__metadata__" when there is one
    length: int  # N: the JSON's bytes, after the 8 that give its length
    file_size: int


def read_header(path: Path) -> Header:
    """path's header; OSError when the file cannot be read, HeaderError when it is no header."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        if len(head) < 8:
            raise HeaderError(f"it is {size} bytes long, too short to be a safetensors file")
        length = int.from_bytes(head, "little")
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise HeaderError("its header length is not plausible")
        if 8 + length > size:
            raise HeaderError("its header is truncated")
        raw = handle.read(length)
    try:
        table = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HeaderError("its header is not JSON") from None
    if not isinstance(table, dict):
        raise HeaderError("its header is not a table of tensors")
    return Header(table, length, size)
