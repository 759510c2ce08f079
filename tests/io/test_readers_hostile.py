"""Hostile files for the readers: each is refused with ONE line naming the file (and
the member, tensor or value) before anything large is read, or read in bounded memory
with the same numbers numpy gives.

.npz archives are built by hand with ``zipfile`` and patched with ``struct``:
duplicate, encrypted, unsupported or corrupt members, sizes and CRCs that lie,
headers that claim huge or mismatched shapes, Fortran-ordered arrays. Calibration
JSON that is no regular file (a device, a pipe), too large or nested too deeply;
special files as models; names and values that would break a one-line message.
The sharded reader (``--workers``) must refuse what one process refuses. Cases that
would hang or exhaust memory if they regressed run in a subprocess under a memory
limit and a timeout.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlp_model
from hostile import assert_one_line_error, expect_error, run_main

import onnx_snn.io.npz
from onnx_snn import OnnxSnnError, convert
from onnx_snn.calibration.result import (
    MAX_CALIBRATION_BYTES,
    Calibration,
    LayerCalibration,
    check_scales,
)
from onnx_snn.io.data import InputSpec, batches, labelled_batches
from onnx_snn.io.shards import Shard, sample_count, shard_source

SIZES = [8, 16, 16, 4]
SPECS = [InputSpec("x", np.dtype(np.float32), (None, 8))]
INT64_MAX = 2**63 - 1
#: A 1.2 GB claim: what a 0.6 MB archive of a hostile battery made the old reader load.
HUGE_ROWS = 60_000_000


def x_data(rows: int, features: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features)).astype(np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape: tuple, fortran: bool = False, descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header claiming ``shape``, padded as numpy pads it."""
    text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def write_zip(path: Path, members: list[tuple[str, bytes]],
              method: int = zipfile.ZIP_STORED) -> Path:
    """An archive of ``members`` (name, bytes), duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def patch_member(path: Path, name: str, **fields: int) -> None:
    """Overwrite fields of member ``name`` in both its local and its central header:
    flags, method, crc, compressed, size, offset (central only)."""
    local_at = {"flags": 6, "method": 8, "crc": 14, "compressed": 18, "size": 22}
    central_at = {"flags": 8, "method": 10, "crc": 16, "compressed": 20, "size": 24,
                  "offset": 42}
    formats = {"flags": "<H", "method": "<H"}
    data = bytearray(path.read_bytes())
    position = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)[0]
    while data[position:position + 4] == b"PK\x01\x02":
        name_length, extra, comment = struct.unpack_from("<HHH", data, position + 28)
        local = struct.unpack_from("<I", data, position + 42)[0]
        if data[position + 46:position + 46 + name_length] == name.encode():
            for field, value in fields.items():
                struct.pack_into(formats.get(field, "<I"), data, position + central_at[field],
                                 value)
                if field in local_at:
                    struct.pack_into(formats.get(field, "<I"), data, local + local_at[field],
                                     value)
        position += 46 + name_length + extra + comment
    path.write_bytes(bytes(data))


def lying_sizes(path: Path, name: str, shape: tuple, fortran: bool = False) -> Path:
    """A deflated member whose header and directory claim ``shape`` while the data holds
    80 numbers (10 rows of 8): an archive of a few hundred bytes that claims gigabytes."""
    header = npy_header(shape, fortran)
    write_zip(path, [(name, header + x_data(10).tobytes())], zipfile.ZIP_DEFLATED)
    patch_member(path, name, size=len(header) + int(np.prod(shape)) * 4)
    return path


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def snn_bytes() -> bytes:
    return convert(mlp_model(SIZES, seed=2), x_data(100), progress=False).model \
        .SerializeToString()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    onnx.save(mlp_model(SIZES, seed=2), tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x_data(50))
    return tmp_path


def convert_argv(d: Path, data: Path | str) -> list:
    return ["convert", d / "ann.onnx", "--calib", d / data, "-o", d / "out.onnx",
            "--no-progress"]


def calibration_argv(d: Path, calibration: Path | str) -> list:
    return ["convert", d / "ann.onnx", "--load-calibration", d / calibration, "-o",
            d / "out.onnx", "--no-progress"]


def run_limited(argv: list, cwd: Path, memory: int = 3 << 30,
                timeout: float = 60) -> subprocess.CompletedProcess:
    """The console script under an address-space limit and a timeout."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "onnx_snn.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          preexec_fn=limit, check=False)


# --------------------------------------------------------------------------- archives

Builder = Callable[[Path], "tuple[str, list]"]
ARCHIVES: dict[str, Builder] = {}


def archive(name: str) -> Callable[[Builder], Builder]:
    def register(function: Builder) -> Builder:
        ARCHIVES[name] = function
        return function
    return register


@archive("duplicate-x")
def _(d):
    write_zip(d / "dup.npz", [("x.npy", npy_bytes(x_data(10))),
                              ("x.npy", npy_bytes(x_data(10, seed=1)))])
    return "dup.npz", ["dup.npz", "'x.npy'", "2 times"]


@archive("duplicate-labels")
def _(d):
    write_zip(d / "dup.npz", [("x.npy", npy_bytes(x_data(10))),
                              ("y.npy", npy_bytes(np.zeros(10, np.int64))),
                              ("y.npy", npy_bytes(np.ones(10, np.int64)))])
    return "dup.npz", ["dup.npz", "'y.npy'", "2 times"]


@archive("encrypted-stored")
def _(d):
    patch_member(write_zip(d / "enc.npz", [("x.npy", npy_bytes(x_data(10)))]), "x.npy",
                 flags=1)
    return "enc.npz", ["enc.npz", "'x.npy'", "encrypted"]


@archive("encrypted-deflated")
def _(d):
    patch_member(write_zip(d / "enc.npz", [("x.npy", npy_bytes(x_data(10)))],
                           zipfile.ZIP_DEFLATED), "x.npy", flags=1)
    return "enc.npz", ["enc.npz", "'x.npy'", "encrypted"]


def _method_case(method: int, needle: str) -> None:
    @archive(f"method-{method}")
    def _(d):
        patch_member(write_zip(d / "m.npz", [("x.npy", npy_bytes(x_data(10)))],
                               zipfile.ZIP_DEFLATED), "x.npy", method=method)
        return "m.npz", ["m.npz", "'x.npy'", f"method {method}", needle]


_method_case(9, "deflate64")
_method_case(12, "bzip2")
_method_case(14, "lzma")
_method_case(99, "AES")


@archive("corrupt-deflate-stream")
def _(d):
    path = write_zip(d / "bad.npz", [("x.npy", npy_bytes(x_data(200)))], zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the compressed data
    path.write_bytes(bytes(data))
    return "bad.npz", ["bad.npz", "'x.npy'", "corrupt"]


@archive("truncated-archive")
def _(d):
    np.savez(d / "cut.npz", x=x_data(50))
    data = (d / "cut.npz").read_bytes()
    (d / "cut.npz").write_bytes(data[:len(data) // 2])
    return "cut.npz", ["cut.npz", "not an .npz archive"]


@archive("empty-file")
def _(d):
    (d / "empty.npz").write_bytes(b"")
    return "empty.npz", ["empty.npz", "not an .npz archive"]


@archive("local-header-names-another-member")
def _(d):
    path = write_zip(d / "renamed.npz", [("x.npy", npy_bytes(x_data(10)))])
    data = bytearray(path.read_bytes())
    data[30:35] = b"z.npy"  # the local header's copy of the name
    path.write_bytes(bytes(data))
    return "renamed.npz", ["renamed.npz", "'x.npy'", "local header", "'z.npy'"]


@archive("member-offset-past-the-end")
def _(d):
    patch_member(write_zip(d / "far.npz", [("x.npy", npy_bytes(x_data(10)))]), "x.npy",
                 offset=10**9)
    return "far.npz", ["far.npz", "'x.npy'", "no local header"]


@archive("stored-crc-wrong")
def _(d):
    path = write_zip(d / "crc.npz", [("x.npy", npy_bytes(x_data(10)))])
    patch_member(path, "x.npy", crc=zlib.crc32(b"something else"))
    return "crc.npz", ["crc.npz", "'x.npy'", "CRC"]


@archive("deflated-crc-wrong")
def _(d):
    path = write_zip(d / "crc.npz", [("x.npy", npy_bytes(x_data(10)))], zipfile.ZIP_DEFLATED)
    patch_member(path, "x.npy", crc=zlib.crc32(b"something else"))
    return "crc.npz", ["crc.npz", "'x.npy'", "CRC"]


@archive("stored-sizes-disagree")
def _(d):
    path = write_zip(d / "sizes.npz", [("x.npy", npy_bytes(x_data(10)))])
    patch_member(path, "x.npy", compressed=100)
    return "sizes.npz", ["sizes.npz", "'x.npy'", "100 bytes stored"]


@archive("data-shorter-than-its-header")
def _(d):
    lying_sizes(d / "short.npz", "x.npy", (40, 8))
    return "short.npz", ["short.npz", "'x.npy'", "ends early", "448 of its 1,408 bytes"]


@archive("data-longer-than-its-header")
def _(d):
    data = npy_bytes(x_data(10))
    path = write_zip(d / "long.npz", [("x.npy", data + b"\0" * 4000)], zipfile.ZIP_DEFLATED)
    patch_member(path, "x.npy", size=len(data), crc=zlib.crc32(data))
    return "long.npz", ["long.npz", "'x.npy'", "more data than"]


@archive("header-claims-a-1.2-GB-fortran-array-of-the-wrong-width")
def _(d):
    lying_sizes(d / "bomb.npz", "x.npy", (HUGE_ROWS, 5), fortran=True)
    return "bomb.npz", ["bomb.npz", "'x'", f"[{HUGE_ROWS}, 5]", "[N, 8]"]


@archive("header-claims-a-1.9-GB-fortran-array-that-ends-early")
def _(d):
    lying_sizes(d / "bomb.npz", "x.npy", (HUGE_ROWS, 8), fortran=True)
    return "bomb.npz", ["bomb.npz", "'x.npy'", "ends early"]


@archive("header-length-claims-4-GB")
def _(d):
    data = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{}"
    write_zip(d / "long_header.npz", [("x.npy", data)])
    return "long_header.npz", ["long_header.npz", "'x'", "broken header", "4,294,967,295"]


@archive("member-is-no-npy")
def _(d):
    write_zip(d / "text.npz", [("x.npy", b"just some text, no array at all")])
    return "text.npz", ["text.npz", "'x'", "broken header"]


@archive("negative-dimensions")
def _(d):
    write_zip(d / "neg.npz", [("x.npy", npy_header((-2, -8)) + b"\0" * 64)])
    return "neg.npz", ["neg.npz", "'x'", "[-2, -8]"]


@archive("void-dtype-of-2-GB")
def _(d):
    header = npy_header((10, 8), descr="|V2000000000")
    write_zip(d / "void.npz", [("x.npy", header)], zipfile.ZIP_DEFLATED)
    return "void.npz", ["void.npz", "'x'"]


@archive("path-with-a-newline")
def _(d):
    np.savez(d / "a\nb.npz", x=x_data(10, 5))
    return "a\nb.npz", [r"'" + str(d) + r"/a\nb.npz'", "'x'", "[N, 8]"]


@archive("member-name-with-a-newline")
def _(d):
    write_zip(d / "names.npz", [("q\nz.npy", npy_bytes(x_data(10)))])
    return "names.npz", ["names.npz", r"'q\nz'"]


@archive("data-is-dev-zero")
def _(d):
    (d / "zero.npz").symlink_to("/dev/zero")
    return "zero.npz", ["zero.npz", "character device"]


@archive("data-is-a-folder-of-arrays")
def _(d):
    (d / "folder.npz").mkdir()
    np.save(d / "folder.npz" / "x.npy", x_data(10))
    return "folder.npz", ["folder.npz", "folder"]


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_hostile_archive_gives_one_line(name: str, work: Path, capsys) -> None:
    data, needles = ARCHIVES[name](work)
    expect_error(convert_argv(work, data), capsys, [work], needles, 1)


@pytest.mark.parametrize("name", ["stored-crc-wrong", "data-shorter-than-its-header",
                                  "encrypted-stored"])
def test_the_python_api_refuses_the_same(name: str, work: Path) -> None:
    data, needles = ARCHIVES[name](work)
    with pytest.raises(OnnxSnnError) as refused:
        list(batches(work / data, SPECS, 7))
    assert all(needle in str(refused.value) for needle in needles)


def test_labels_beyond_int64_are_quoted_exactly(work: Path, snn_bytes: bytes, capsys) -> None:
    (work / "snn.onnx").write_bytes(snn_bytes)
    labels = np.array([0, 1, 2**63 + 5, 3], np.uint64)
    np.savez(work / "u64.npz", x=x_data(4), y=labels)
    line = expect_error(["eval", work / "snn.onnx", "--data", work / "u64.npz",
                         "--timesteps", "2"], capsys, [work],
                        [str(2**63 + 5), "sample 2"], 1)
    assert str(int(labels[2].astype(np.int64))) not in line  # the wrapped-around value


def test_labels_of_rank_3_are_refused_by_their_header(work: Path) -> None:
    np.savez(work / "cube.npz", x=x_data(6), y=np.zeros((6, 2, 2), np.int64))
    with pytest.raises(OnnxSnnError, match=r"cube\.npz: array 'y' holds labels.*\[6, 2, 2\]"):
        list(labelled_batches(work / "cube.npz", SPECS, 4))


def test_a_batch_larger_than_memory_is_refused_by_the_header(work: Path) -> None:
    """Dynamic sizes: a header of 3 rows of 1 GiB each (its data never stored)."""
    lying_sizes(work / "wide.npz", "x.npy", (3, 2**28))
    specs = [InputSpec("x", np.dtype(np.float32), (None, None))]
    with pytest.raises(OnnxSnnError, match=r"wide\.npz.*3 rows of array 'x'.*"
                                           r"3,221,225,472 bytes.*smaller batch size"):
        list(batches(work / "wide.npz", specs, 100))


# --------------------------------------------------------------------------- Fortran order

@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize("shape", [(30, 8), (23, 2, 4), (17,)], ids=str)
@pytest.mark.parametrize("batch_size,window", [(7, 64), (100, None)],
                         ids=["many-passes", "one-pass"])
def test_fortran_arrays_read_as_numpy_reads_them(compressed: bool, shape: tuple,
                                                 batch_size: int, window: int | None,
                                                 tmp_path: Path, monkeypatch) -> None:
    if window is not None:
        monkeypatch.setattr(onnx_snn.io.npz, "FORTRAN_WINDOW_BYTES", window)
    array = np.asfortranarray(np.random.default_rng(3).normal(size=shape).astype(np.float32))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "f.npz", x=array,
                                                      y=np.arange(shape[0]) % 3)
    with np.load(tmp_path / "f.npz") as loaded:
        expected, expected_labels = loaded["x"], loaded["y"]
    specs = [InputSpec("x", np.dtype(np.float32), (None, *shape[1:]))]
    got = list(labelled_batches(tmp_path / "f.npz", specs, batch_size))
    assert [len(b.labels) for b in got] == [min(batch_size, shape[0] - s)
                                            for s in range(0, shape[0], batch_size)]
    np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in got]), expected)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in got]), expected_labels)


#: Reads an .npz through onnx_snn.io.data under an address-space limit set above what
#: the interpreter holds after its imports; prints rows, sum and peak memory (kB).
BOUNDED_READER = """
import resource, sys
import numpy as np
from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import InputSpec, batches
status = open('/proc/self/status').read().split()
size = int(status[status.index('VmSize:') + 1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[3]), size + int(sys.argv[3])))
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
specs = [InputSpec('x', np.dtype(np.float32), (None, int(sys.argv[2])))]
rows, total = 0, 0.0
try:
    for batch in batches(sys.argv[1], specs, 1000):
        rows += len(batch['x'])
        total += float(batch['x'].sum(dtype=np.float64))
except OnnxSnnError as error:
    print('refused', error)
    sys.exit(3)
print(rows, total, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start)
"""


def run_bounded(path: Path, features: int, headroom: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BOUNDED_READER, str(path), str(features),
                           str(headroom)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_a_large_fortran_array_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """256 MB of Fortran-ordered float32 in a ~1 MB archive: every row read, with the
    sum numpy gives, in less than half the array's size of memory."""
    rows, columns = 8 << 20, 8
    column = (np.arange(rows) % 251).astype(np.float32)
    with zipfile.ZipFile(tmp_path / "big.npz", "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        member.write(npy_header((rows, columns), fortran=True))
        for index in range(columns):
            member.write((column + index).tobytes())
    assert (tmp_path / "big.npz").stat().st_size < 4 << 20
    expected = sum(float((column + index).sum(dtype=np.float64)) for index in range(columns))
    done = run_bounded(tmp_path / "big.npz", columns, 160 << 20)
    assert done.returncode == 0, done.stderr[-2000:]
    got_rows, total, peak_kb = done.stdout.split()
    assert (int(got_rows), float(total)) == (rows, expected)
    assert int(peak_kb) < 128 << 10, f"peak grew by {peak_kb} kB reading 256 MB"


def test_a_huge_claim_is_refused_before_reading_under_a_memory_limit(tmp_path: Path) -> None:
    lying_sizes(tmp_path / "bomb.npz", "x.npy", (HUGE_ROWS, 5), fortran=True)
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 10
    done = run_bounded(tmp_path / "bomb.npz", 8, 64 << 20)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.startswith("refused") and "[N, 8]" in done.stdout


# --------------------------------------------------------------------------- shards

def test_shards_refuse_a_stored_member_whose_crc_is_wrong(tmp_path: Path) -> None:
    """The single-process reader refuses it (``stored-crc-wrong``); so do the workers,
    which map stored members from the file."""
    path = write_zip(tmp_path / "crc.npz", [("x.npy", npy_bytes(x_data(40))),
                                            ("y.npy", npy_bytes(np.arange(40) % 4))])
    patch_member(path, "y.npy", crc=0)
    assert sample_count(path, SPECS) == 40
    with pytest.raises(OnnxSnnError, match=r"crc\.npz: member 'y\.npy' fails its CRC"):
        shard_source(path, Shard(1, 10, 20), SPECS, 10, labelled=True)
    with pytest.raises(OnnxSnnError, match=r"crc\.npz: member 'y\.npy' fails its CRC"):
        list(labelled_batches(path, SPECS, 10))


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_shards_read_fortran_rows_as_numpy(compressed: bool, tmp_path: Path) -> None:
    array = np.asfortranarray(x_data(45))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "f.npz", x=array)
    source, _ = shard_source(tmp_path / "f.npz", Shard(2, 20, 40), SPECS, 10, labelled=False)
    got = np.concatenate([b["x"] for b in batches(source, SPECS, 10)])
    np.testing.assert_array_equal(got, array[20:40])


@pytest.mark.parametrize("name", ["duplicate-x", "method-9",
                                  "header-claims-a-1.2-GB-fortran-array-of-the-wrong-width"])
def test_shards_refuse_what_one_process_refuses(name: str, work: Path) -> None:
    data, needles = ARCHIVES[name](work)
    with pytest.raises(OnnxSnnError) as refused:
        sample_count(work / data, SPECS)
    assert all(needle in str(refused.value) for needle in needles)


# --------------------------------------------------------------------------- calibration

CALIBRATIONS: dict[str, Builder] = {}


def calibration(name: str) -> Callable[[Builder], Builder]:
    def register(function: Builder) -> Builder:
        CALIBRATIONS[name] = function
        return function
    return register


@calibration("a-folder")
def _(d):
    (d / "scales.json").mkdir()
    return "scales.json", ["scales.json", "folder", "not a regular file"]


@calibration("dev-null")
def _(d):
    (d / "scales.json").symlink_to("/dev/null")
    return "scales.json", ["scales.json", "character device"]


def _nested_case(name: str, text: str) -> None:
    @calibration(f"nested-{name}")
    def _(d):
        (d / "deep.json").write_text(text)
        return "deep.json", ["deep.json", "not a calibration file", "nested too deeply"]


_nested_case("lists", "[" * 100_000 + "]" * 100_000)
_nested_case("objects", '{"a":' * 100_000 + "1" + "}" * 100_000)
_nested_case("in-a-scale", '{"layers": [{"node": "relu0", "mode": "Max", "momentum": 0.1, '
             '"scale": ' + "[" * 100_000 + "]" * 100_000 + "}]}")


@calibration("not-utf-8")
def _(d):
    (d / "latin.json").write_bytes(b'{"layers": [], "note": "\xe9t\xe9"}')
    return "latin.json", ["latin.json", "not a calibration file"]


@calibration("node-name-not-a-string")
def _(d):
    (d / "s.json").write_text(json.dumps({"layers": [
        {"node": ["relu0"], "scale": 1.0, "mode": "Max", "momentum": 0.1}]}))
    return "s.json", ["s.json", "not a calibration file", "node name"]


@calibration("name-with-a-newline")
def _(d):
    (d / "s\n.json").write_text("[" * 100_000)
    return "s\n.json", [r"s\n.json'", "not a calibration file"]


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_hostile_calibration_gives_one_line(name: str, work: Path, capsys) -> None:
    path, needles = CALIBRATIONS[name](work)
    expect_error(calibration_argv(work, path), capsys, [work], needles, 1)


def test_a_calibration_larger_than_any_is_refused_unread(tmp_path: Path, work: Path,
                                                         capsys) -> None:
    big = tmp_path / "big" / "scales.json"
    big.parent.mkdir()
    with open(big, "wb") as file:  # sparse: nothing is written but the size
        file.truncate(MAX_CALIBRATION_BYTES + 1)
    status, _, err = run_main(calibration_argv(work, big), capsys)
    assert status == 1
    expected = (f"expected at most {MAX_CALIBRATION_BYTES:,} bytes, got "
                f"{MAX_CALIBRATION_BYTES + 1:,}")
    assert_one_line_error(err, ["scales.json", expected])


def test_a_node_name_with_a_newline_stays_on_one_line() -> None:
    bad = Calibration([LayerCalibration("relu0\nrelu1", -1.0, "Max", 0.1)])
    with pytest.raises(OnnxSnnError) as refused:
        check_scales(bad)
    assert "\n" not in str(refused.value) and r"'relu0\nrelu1'" in str(refused.value)


def test_a_saved_calibration_still_loads(work: Path) -> None:
    saved = convert(mlp_model(SIZES, seed=2), x_data(50), progress=False).calibration
    saved.save(work / "scales.json")
    loaded = Calibration.load(work / "scales.json")
    assert loaded.to_dict() == saved.to_dict()


# --------------------------------------------------------------------------- special files
# Run in a subprocess: a reader that regressed would hang (a pipe) or read until the
# memory limit (a device); the timeout and the limit stop it.

def calibration_dev_zero(d: Path) -> tuple[list, list]:
    return calibration_argv(d, "/dev/zero"), ["/dev/zero", "calibration file",
                                              "character device"]


def calibration_fifo(d: Path) -> tuple[list, list]:
    os.mkfifo(d / "pipe.json")
    return calibration_argv(d, "pipe.json"), ["pipe.json", "named pipe"]


def data_fifo(d: Path) -> tuple[list, list]:
    os.mkfifo(d / "pipe.npz")
    return convert_argv(d, "pipe.npz"), ["pipe.npz", "data file", "named pipe"]


def model_fifo(d: Path) -> tuple[list, list]:
    os.mkfifo(d / "pipe.onnx")
    return ["convert", d / "pipe.onnx", "--calib", d / "calib.npz", "-o", d / "out.onnx"], \
        ["pipe.onnx", "model file", "named pipe"]


def model_dev_zero(d: Path) -> tuple[list, list]:
    return ["convert", "/dev/zero", "--calib", d / "calib.npz", "-o", d / "out.onnx"], \
        ["/dev/zero", "model file", "character device"]


def external_data_dev_zero(d: Path) -> tuple[list, list]:
    onnx.save(mlp_model(SIZES, seed=2), d / "ext.onnx", save_as_external_data=True,
              location="ext.data", size_threshold=0)
    (d / "ext.data").unlink()
    (d / "ext.data").symlink_to("/dev/zero")
    return ["convert", d / "ext.onnx", "--calib", d / "calib.npz", "-o", d / "out.onnx"], \
        ["ext.data", "external data file", "character device"]


SPECIAL = {function.__name__: function for function in [
    calibration_dev_zero, calibration_fifo, data_fifo, model_fifo, model_dev_zero,
    external_data_dev_zero]}


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_special_files_are_refused_without_reading(name: str, work: Path) -> None:
    argv, needles = SPECIAL[name](work)
    done = run_limited(argv, work)
    assert done.returncode == 1, done.stderr[-2000:]
    assert_one_line_error(done.stderr, needles)
    assert not (work / "out.onnx").exists()
