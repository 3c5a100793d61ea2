"""The records of a torch zip file and the sizes they declare, read from its central directory alone.

`torch.load` allocates each record at the uncompressed size the zip's central directory declares before it reads the
record (and inflates a DEFLATE-compressed one), so a half-megabyte file can make it allocate gigabytes before anything
checks the weights. Reading the directory first bounds that: `zip_records` reads the end-of-directory record, and
then the directory itself, never a record's data, and refuses a directory that is too large or not where the end
record says (where another zip reader could find a different one). `torch.save` stores every record uncompressed, so
the sizes its files declare add up to less than the file itself.

Format: PKWARE's APPNOTE (end of central directory, its ZIP64 form, central file headers, the ZIP64 extra field).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

MAX_RECORDS = 1 << 17  # a registry case's checkpoint with Adam holds at most ~20,000 records (one per tensor)
_MAX_DIRECTORY = MAX_RECORDS * 512  # bytes of central directory: 46 fixed bytes a record, its name and extras
_EOCD = struct.Struct("<4s4H2LH")  # signature, disk numbers, entries here and in all, directory size and offset
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_HEADER = struct.Struct("<4s6H3L5H2L")  # a central file header's 46 fixed bytes
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF  # "see the ZIP64 record" markers


@dataclass(frozen=True)
class ZipRecord:
    """One record as the central directory declares it."""

    name: str
    size: int  # uncompressed: what a reader allocates for it
    compressed: int  # the bytes it takes in the file
    method: int  # 0 stored, 8 deflated
    offset: int  # of its local header in the file


def is_zip(fd: int) -> bool:
    """Whether the file starts as torch's zip files do (``PK\\x03\\x04``: what `torch.load` itself tests)."""
    return os.pread(fd, 4, 0) == b"PK\x03\x04"


def zip_records(fd: int, size: int) -> list[ZipRecord]:
    """The records of the zip file open as `fd` (`size` bytes), from its central directory.

    Raises:
        ValueError: one line: no end record, a directory larger than a torch file's or not where the end record puts
            it, more than `MAX_RECORDS` records, or a header that does not parse.
    """
    try:
        return _records(fd, size)
    except struct.error:  # a field cut short
        raise ValueError("its zip directory is cut short (a damaged or truncated file)") from None


def _records(fd: int, size: int) -> list[ZipRecord]:
    entries, directory_size, directory_at, end_at = _end_record(fd, size)
    if entries > MAX_RECORDS:
        raise ValueError(f"its zip directory lists {entries} records (a torch file has at most {MAX_RECORDS})")
    if directory_size > _MAX_DIRECTORY or directory_at + directory_size != end_at:
        raise ValueError("its zip directory is not where its end record says (not a zip file torch wrote)")
    directory = os.pread(fd, directory_size, directory_at)
    records, at = [], 0
    for _ in range(entries):
        if at + _HEADER.size > len(directory):
            raise ValueError("its zip directory ends in the middle of a record")
        fields = _HEADER.unpack_from(directory, at)
        if fields[0] != b"PK\x01\x02":
            raise ValueError("its zip directory holds something that is not a record header")
        method, compressed, declared, name_len, extra_len, comment_len = fields[4], *fields[8:10], *fields[10:13]
        name_at = at + _HEADER.size
        extra = directory[name_at + name_len : name_at + name_len + extra_len]
        declared, compressed, offset = _zip64_sizes(extra, declared, compressed, fields[-1])
        name = directory[name_at : name_at + name_len].decode("utf-8", "replace")
        records.append(ZipRecord(name, declared, compressed, method, offset))
        at = name_at + name_len + extra_len + comment_len
    return records


def _end_record(fd: int, size: int) -> tuple[int, int, int, int]:
    """Entries, directory size and offset, and where the (ZIP64) end record starts."""
    tail_at = max(0, size - (_EOCD.size + _FULL16))  # the end record, then at most a 64 KiB comment
    tail = os.pread(fd, size - tail_at, tail_at)
    found = tail.rfind(b"PK\x05\x06")
    if found < 0 or found + _EOCD.size > len(tail):
        raise ValueError("no zip end record (a damaged or truncated file)")
    _, _, _, _, entries, directory_size, directory_at, _ = _EOCD.unpack_from(tail, found)
    end_at = tail_at + found
    locator_at = end_at - _EOCD64_LOCATOR.size
    locator = os.pread(fd, _EOCD64_LOCATOR.size, locator_at) if locator_at >= 0 else b""
    if not locator.startswith(b"PK\x06\x07"):  # no ZIP64 end record (torch writes one always): the plain one counts
        if entries == _FULL16 or _FULL32 in (directory_size, directory_at):
            raise ValueError("a ZIP64 end record is announced but missing")
        return entries, directory_size, directory_at, end_at
    _, _, end64_at, _ = _EOCD64_LOCATOR.unpack(locator)  # as zip readers do: the ZIP64 record's figures count
    end64 = _EOCD64.unpack(os.pread(fd, _EOCD64.size, end64_at)) if end64_at + _EOCD64.size <= locator_at else None
    if end64 is None or end64[0] != b"PK\x06\x06":
        raise ValueError("its ZIP64 end record is not where its locator says")
    return end64[7], end64[8], end64[9], end64_at


def _zip64_sizes(extra: bytes, declared: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """The 64-bit sizes and offset a ZIP64 extra field holds for those its header marks 0xFFFFFFFF (in that order)."""
    if _FULL32 not in (declared, compressed, offset):
        return declared, compressed, offset
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        if kind == 1:
            values = list(struct.unpack_from(f"<{min(length, 24) // 8}Q", extra, at + 4))
            fields = [values.pop(0) if v == _FULL32 and values else v for v in (declared, compressed, offset)]
            if _FULL32 in fields:
                break
            return fields[0], fields[1], fields[2]
        at += 4 + length
    raise ValueError("a record's ZIP64 sizes are announced but missing")


def read_record(fd: int, record: ZipRecord) -> bytes:
    """A record's bytes (at most its declared size, inflated if it is compressed), through its local header.

    Raises:
        ValueError: the local header is not there, the method is neither stored nor deflated, or the data is short.
    """
    header = os.pread(fd, 30, record.offset)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise ValueError(f"the record {record.name} is not where the zip directory says")
    name_len, extra_len = struct.unpack_from("<2H", header, 26)
    data = os.pread(fd, record.compressed, record.offset + 30 + name_len + extra_len)
    if record.method == 8:
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, record.size)
    elif record.method != 0:
        raise ValueError(f"the record {record.name} is compressed with method {record.method}")
    if len(data) != record.size:
        raise ValueError(f"the record {record.name} is shorter than the zip directory says")
    return data
