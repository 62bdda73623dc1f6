"""Reading and writing the safetensors format by hand.

Layout: an 8-byte little-endian header length, a JSON header (padded with spaces to a multiple
of 8 bytes) mapping each tensor name to dtype, shape and data offsets, plus `__metadata__`
(string values only), then the tensor bytes.
"""

import json
import struct
from dataclasses import dataclass

from library.errors import SafetensorError

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2}


@dataclass
class Tensor:
    dtype: str
    shape: list[int]
    data: bytes


def encode(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, tensor in tensors.items():
        header[name] = {
            "dtype": tensor.dtype,
            "shape": tensor.shape,
            "data_offsets": [offset, offset + len(tensor.data)],
        }
        offset += len(tensor.data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t.data for t in tensors.values())


def write(path: str, tensors: dict[str, Tensor], metadata: dict[str, str], truncate: bool) -> None:
    """Write the file in place, as safetensors does; `truncate` keeps only its first half."""
    content = encode(tensors, metadata)
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2] if truncate else content)


def read_header(path: str) -> dict[str, object]:
    """The JSON header; raises SafetensorError like safetensors does for a damaged file."""
    with open(path, "rb") as f:
        content = f.read()
    if len(content) < 8:
        raise SafetensorError("Error while deserializing header: HeaderTooSmall")
    (length,) = struct.unpack("<Q", content[:8])
    if 8 + length > len(content):
        raise SafetensorError("Error while deserializing header: InvalidHeaderLength")
    try:
        header = json.loads(content[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        message = "Error while deserializing header: InvalidHeaderDeserialization"
        raise SafetensorError(message) from None
    data_length = len(content) - 8 - length
    for name, entry in header.items():
        if name != "__metadata__" and entry["data_offsets"][1] > data_length:
            raise SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")
    return header
