"""Reading input files safely: regular files of bounded size, and .npz zip members.

A file is read only when it is a regular file (never a pipe, device or folder,
which could hang or never end). An archive's directory is checked before any
member is read: no member twice, none encrypted, each stored or deflated, its
local header where the directory says. ``MemberStream`` reads one member's bytes
in order, never more than the directory's size, and refuses data that ends
early, runs on past that size, or fails its CRC. Names in messages are
``shown`` escaped, so a message stays one line.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onnx_snn.errors import OnnxSnnError

#: How much compressed data a member stream reads from the file at once.
CHUNK_BYTES = 1 << 20
#: What ``numpy.savez`` and ``numpy.savez_compressed`` write.
METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
#: Every method's name, for messages (99 is WinZip's AES encryption).
METHOD_NAMES = {**zipfile.compressor_names, 99: "AES encryption"}
#: A zip local file header: signature, then fixed fields; name and extra lengths last.
LOCAL_HEADER = struct.Struct("<4s22xHH")
KINDS = [(stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe (FIFO)"),
         (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
         (stat.S_ISBLK, "block device")]


def shown(name: Any) -> str:
    """A file name for a one-line message: as it is, or escaped (``repr``) when it
    holds a line break or another character that is not printable."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    return text if text.isprintable() else repr(text)


def check_regular(path: Path, what: str) -> os.stat_result:
    """The status of ``path`` (links followed); refuses anything but a regular file."""
    try:
        status = path.stat()
    except FileNotFoundError as error:
        raise OnnxSnnError(f"{shown(path)}: no such {what}") from error
    except OSError as error:
        raise OnnxSnnError(f"{shown(path)}: cannot read the {what} "
                           f"({error.strerror or error})") from error
    _refuse_special(path, status, what)
    return status


def _refuse_special(path: Path, status: os.stat_result, what: str) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in KINDS if test(status.st_mode)), "special file")
        raise OnnxSnnError(f"{shown(path)}: the {what} is a {kind}, not a regular file")


def read_regular(path: Path, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. Opened without blocking,
    so a pipe put there is refused rather than waited on."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            status = os.fstat(descriptor)
            _refuse_special(path, status, what)
            with open(descriptor, "rb", closefd=False) as file:
                data = file.read(limit + 1) if status.st_size <= limit else b""
        finally:
            os.close(descriptor)
    except FileNotFoundError as error:
        raise OnnxSnnError(f"{shown(path)}: no such {what}") from error
    except OSError as error:
        raise OnnxSnnError(f"{shown(path)}: cannot read the {what} "
                           f"({error.strerror or error})") from error
    if status.st_size > limit or len(data) > limit:
        got = f"{status.st_size:,}" if status.st_size > limit else f"more than {limit:,}"
        raise OnnxSnnError(f"{shown(path)}: the {what} is too large: expected at most "
                           f"{limit:,} bytes, got {got}")
    return data


@contextmanager
def open_npz(path: Path) -> Iterator[zipfile.ZipFile]:
    """The zip archive at ``path``, its directory read and checked: a regular file,
    a readable zip, no member name twice."""
    check_regular(path, "data file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError, struct.error) as error:
        with open(path, "rb") as handle:
            is_npy = handle.read(6) == b"\x93NUMPY"
        hint = (" (a .npy file holds one array; save the arrays with numpy.savez(path, x=..., "
                "y=...))" if is_npy else f" ({error})")
        raise OnnxSnnError(f"{shown(path)}: not an .npz archive{hint}") from error
    except OSError as error:
        raise OnnxSnnError(f"{shown(path)}: cannot read as .npz "
                           f"({error.strerror or error})") from error
    with archive:
        twice = sorted((name, count) for name, count in Counter(archive.namelist()).items()
                       if count > 1)
        if twice:
            raise OnnxSnnError(f"{shown(path)}: member {twice[0][0]!r} appears {twice[0][1]} "
                               "times in the archive; each array must be stored once")
        yield archive


def member_info(path: Path, archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The directory entry of member ``name``; refuses one this reader cannot read."""
    info = archive.getinfo(name)
    where = f"{shown(path)}: member {name!r}"
    if info.flag_bits & 0x1:
        raise OnnxSnnError(f"{where} is encrypted; save the arrays unencrypted "
                           "(numpy.savez)")
    if info.compress_type not in METHODS:
        method = METHOD_NAMES.get(info.compress_type, "unknown")
        raise OnnxSnnError(f"{where} is compressed with method {info.compress_type} "
                           f"({method}); expected stored or deflated (numpy.savez, "
                           "numpy.savez_compressed)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise OnnxSnnError(f"{where} is stored uncompressed, but the directory gives it "
                           f"{info.compress_size:,} bytes stored for {info.file_size:,}")
    return info


def data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where member ``info``'s data starts in the file, from its local header, which
    must agree with the directory and leave room for the data before the file ends."""
    where = f"{shown(path)}: member {info.filename!r}"
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        fixed = file.read(LOCAL_HEADER.size)
        if len(fixed) < LOCAL_HEADER.size or fixed[:4] != b"PK\x03\x04":
            raise OnnxSnnError(f"{where} has no local header at offset "
                               f"{info.header_offset:,}: the archive is corrupt")
        _, name_length, extra_length = LOCAL_HEADER.unpack(fixed)
        name = file.read(name_length)
        size = os.fstat(file.fileno()).st_size
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if name.decode(encoding, errors="replace") != info.orig_filename:
        raise OnnxSnnError(f"{where}: its local header names "
                           f"{name.decode(encoding, errors='replace')!r}: the archive is "
                           "corrupt")
    offset = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
    if offset + info.compress_size > size:
        raise OnnxSnnError(f"{where} runs past the end of the file: {info.compress_size:,} "
                           f"bytes from offset {offset:,} in a file of {size:,} bytes")
    return offset


class MemberStream:
    """The bytes of one member, read in order (``read``, ``skip``). At the member's
    end (its directory size) the data must end too and match the CRC."""

    def __init__(self, path: Path, info: zipfile.ZipInfo) -> None:
        self.where = f"{shown(path)}: member {info.filename!r}"
        self.info = info
        self.left = info.file_size  # bytes still to give
        self.position = 0
        self._raw_left = info.compress_size
        self._crc = 0
        self._ended = False
        deflated = info.compress_type == zipfile.ZIP_DEFLATED
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        offset = data_offset(path, info)
        self._file = open(path, "rb")
        self._file.seek(offset)

    def __enter__(self) -> MemberStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes; refuses a member that ends before them."""
        parts, need = [], min(size, self.left)
        try:
            while need:
                data = self._next(need)
                if not data and self._drained():
                    break
                parts.append(data)
                need -= len(data)
        except zlib.error as error:
            raise OnnxSnnError(f"{self.where}: the compressed data is corrupt ({error})") \
                from error
        data = b"".join(parts)
        self._crc = zlib.crc32(data, self._crc)
        self.left -= len(data)
        self.position += len(data)
        if len(data) < size:
            raise OnnxSnnError(f"{self.where} ends early: {self.position:,} of its "
                               f"{self.info.file_size:,} bytes could be read")
        if self.left == 0 and not self._ended:
            self._check_end()
            self._ended = True
        return data

    def skip(self, size: int) -> None:
        """Read past ``size`` bytes (checked like any others), a chunk at a time."""
        while size > 0:
            step = min(size, 4 * CHUNK_BYTES)
            self.read(step)
            size -= step

    def finish(self) -> None:
        """Read to the member's end, which checks its length and CRC."""
        self.skip(self.left)
        self.read(0)

    def _raw(self, most: int) -> bytes:
        data = self._file.read(min(most, self._raw_left))
        # a file that ends sooner changed since its directory was read: nothing more
        self._raw_left = self._raw_left - len(data) if data else 0
        return data

    def _next(self, most: int) -> bytes:
        """Up to ``most`` more bytes of the member's data (maybe none yet)."""
        if self._inflate is None:
            return self._raw(most)
        if self._inflate.eof:
            return b""
        source = self._inflate.unconsumed_tail or self._raw(CHUNK_BYTES)
        return self._inflate.decompress(source, most)

    def _drained(self) -> bool:
        if self._inflate is None:
            return not self._raw_left
        return self._inflate.eof or not (self._raw_left or self._inflate.unconsumed_tail)

    def _check_end(self) -> None:
        """At the directory's size: no more data, the stream ended, the CRC right."""
        if self._inflate is not None:
            while not self._drained():
                if self._next(1):
                    raise OnnxSnnError(f"{self.where} holds more data than its "
                                       f"{self.info.file_size:,} bytes: the archive is "
                                       "corrupt")
            if not self._inflate.eof or self._raw_left or self._inflate.unused_data:
                raise OnnxSnnError(f"{self.where}: the compressed data does not end where "
                                   "the directory says: the archive is corrupt")
        if self._crc != self.info.CRC:
            raise OnnxSnnError(f"{self.where} fails its CRC check (the directory says "
                               f"{self.info.CRC:08x}, the data gives {self._crc:08x}): the "
                               "archive is corrupt")


def check_member(path: Path, info: zipfile.ZipInfo) -> None:
    """Read a member through once, checking its length and CRC."""
    with MemberStream(path, info) as stream:
        stream.finish()
