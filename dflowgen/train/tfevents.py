"""TensorBoard event files of scalars, written and read without the tensorboard package.

An event file is a sequence of records, each ``uint64 length | uint32 masked_crc32c(length) |
data | uint32 masked_crc32c(data)`` (little-endian), where ``data`` is a serialised
``tensorflow.Event`` protobuf. The first event holds ``file_version = "brain.Event:2"``; every
other holds ``wall_time``, ``step`` and a ``Summary`` of ``simple_value`` scalars:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

TensorBoard reads any file whose name holds ``tfevents`` (``tensorboard --logdir RUN``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from dflowgen.errors import DflowgenError

FILE_VERSION = "brain.Event:2"
_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord files use it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: the CRC rotated right by 15 bits plus a constant (mod 2³²)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, ``data``, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 fields encode negatives as ten-byte two's complement
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    """A serialised ``Event`` with ``scalars`` (tag → value) as its summary, or with ``file_version``."""
    data = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        data += _varint(2 << 3) + _varint(step)
    if file_version is not None:
        data += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(_length_delimited(1, _length_delimited(1, tag.encode()) + _varint(2 << 3 | 5)
                                            + struct.pack("<f", value)) for tag, value in scalars.items())
        data += _length_delimited(5, values)
    return data


def file_header(wall_time: float) -> bytes:
    """The first record of every event file (its format version)."""
    return frame_record(encode_event(wall_time, file_version=FILE_VERSION))


def scalar_record(wall_time: float, step: int, scalars: Mapping[str, float]) -> bytes:
    """One framed event of scalars at ``step``."""
    return frame_record(encode_event(wall_time, step, scalars))


def read_records(path: Path) -> Iterator[bytes]:
    """The data of every record of a TFRecord file, each CRC checked.

    Raises:
        DflowgenError: a record is truncated or a CRC does not match.
    """
    blob = Path(path).read_bytes()
    offset = 0
    while offset < len(blob):
        header = blob[offset:offset + 12]
        if len(header) < 12:
            raise DflowgenError(f"{path}: truncated record header at byte {offset}")
        (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != length_crc:
            raise DflowgenError(f"{path}: bad length checksum at byte {offset}")
        data = blob[offset + 12:offset + 12 + length]
        footer = blob[offset + 12 + length:offset + 16 + length]
        if len(data) < length or len(footer) < 4:
            raise DflowgenError(f"{path}: truncated record at byte {offset}")
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise DflowgenError(f"{path}: bad data checksum at byte {offset}")
        yield data
        offset += 16 + length


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a serialised protobuf message (wire types 0, 1, 2, 5)."""
    offset = 0

    def varint() -> int:
        nonlocal offset
        value, shift = 0, 0
        while True:
            byte = data[offset]
            offset += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while offset < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, wire, varint()
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield field, wire, data[offset:offset + size]
            offset += size
        elif wire == 2:
            size = varint()
            yield field, wire, data[offset:offset + size]
            offset += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def decode_event(data: bytes) -> dict[str, object]:
    """An ``Event``'s ``wall_time``, ``step``, ``file_version`` (when set) and ``scalars`` (tag → value)."""
    event: dict[str, object] = {"wall_time": 0.0, "step": 0, "scalars": {}}
    for field, _, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for _, _, entry in _fields(value):
                parts = {number: part for number, _, part in _fields(entry)}
                event["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    return event


def read_scalars(path: Path) -> list[tuple[int, str, float]]:
    """Every scalar of an event file as (step, tag, value), in file order."""
    return [(event["step"], tag, value) for event in map(decode_event, read_records(path))
            for tag, value in event["scalars"].items()]
