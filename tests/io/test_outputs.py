"""Outputs are committed together or not at all, and never replace what is not a
regular file (``onnx_snn.io.outputs``): staged writes, failed commits, links, devices,
pipes, report folders, and SIGTERM during a save."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlp_model
from hostile import snapshot

from onnx_snn import OnnxSnnError, convert
from onnx_snn.cli import main
from onnx_snn.io.outputs import OutputSet
from onnx_snn.measure.report import make_report

SIZES = [8, 16, 4]


def x_data(rows: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, SIZES[0])).astype(np.float32)


@pytest.fixture(scope="module")
def snn():
    return convert(mlp_model(SIZES, seed=1), x_data(100), progress=False)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    onnx.save(mlp_model(SIZES, seed=1), tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x_data(100))
    return tmp_path


def test_all_outputs_appear_together(tmp_path: Path) -> None:
    with OutputSet() as outputs:
        outputs.add_text(tmp_path / "a.txt", "first\n")
        outputs.add_json(tmp_path / "b.json", {"n": 2})
        assert not (tmp_path / "a.txt").exists()  # staged, not yet in place
    assert (tmp_path / "a.txt").read_text() == "first\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {"n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_a_failure_before_the_commit_writes_nothing(tmp_path: Path) -> None:
    """The disk fills while the second output is staged: the first is not written either,
    an existing file keeps its content, and no staged file stays behind."""
    (tmp_path / "a.txt").write_text("old\n")

    def disk_full(staged: Path) -> None:
        staged.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OnnxSnnError, match=r"b\.json: cannot write \(No space left"):
        with OutputSet() as outputs:
            outputs.add_text(tmp_path / "a.txt", "new\n")
            outputs.add_file(tmp_path / "b.json", disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old\n"


def test_a_failed_rename_puts_the_replaced_files_back(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.txt").write_text("old a\n")
    (tmp_path / "b.txt").write_text("old b\n")
    real_replace = os.replace

    def replace(source, target):  # moving the staged b.txt into place fails
        if str(target).endswith("b.txt") and str(source).endswith(".tmp"):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(source, target)

    outputs = OutputSet()
    outputs.add_text(tmp_path / "a.txt", "new a\n")
    outputs.add_text(tmp_path / "b.txt", "new b\n")
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OnnxSnnError, match="b.txt"):
        outputs.commit()
    assert (tmp_path / "a.txt").read_text() == "old a\n"
    assert (tmp_path / "b.txt").read_text() == "old b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_link_is_followed_and_kept(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}\n")
    (tmp_path / "link.json").symlink_to("real.json")
    with OutputSet() as outputs:
        outputs.add_json(tmp_path / "link.json", [1, 2])
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text()) == [1, 2]


def test_one_path_for_two_outputs_is_refused(tmp_path: Path, snn) -> None:
    """SpikingModel.save(p, report=p) used to write the report over the model."""
    path = tmp_path / "snn.onnx"
    with pytest.raises(OnnxSnnError, match="given for two outputs"):
        snn.save(path, report=path)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_json_through_dev_null_leaves_it_a_device(files: Path, capsys) -> None:
    """As root, --json /dev/null used to replace /dev/null by a regular file."""
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "-o", str(files / "snn.onnx"), "--json", "/dev/null", "--no-progress"]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert (files / "snn.onnx").is_file()


def test_json_through_a_pipe(files: Path) -> None:
    """A FIFO is written through (a reader gets the JSON), and stays a FIFO."""
    pipe = files / "report.pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "-o", str(files / "snn.onnx"), "--json", str(pipe), "--no-progress"]) == 0
    reader.join(timeout=30)
    assert [layer["node"] for layer in json.loads(received[0])["layers"]] == ["relu0"]
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)


def test_report_folder_is_replaced_whole(tmp_path: Path, snn) -> None:
    """A second report replaces the first folder at once; a report that fails while its
    files are written leaves the earlier folder as it was."""
    x, y = x_data(20), np.zeros(20, np.int64)
    first = make_report(snn.model, x, y, timesteps=4, progress=False)
    out = tmp_path / "rep"
    first.write(out)
    before = snapshot(out)
    assert json.loads((out / "report.json").read_text())["timesteps"] == 4

    broken = make_report(snn.model, x, y, timesteps=8, progress=False)
    broken.layers = None  # the plots cannot be drawn from this
    with pytest.raises(TypeError):
        broken.write(out)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no staged folder left

    make_report(snn.model, x, y, timesteps=8, progress=False).write(out)
    assert json.loads((out / "report.json").read_text())["timesteps"] == 8


SIGTERM_DURING_SAVE = """
import os, signal, sys
import onnx
real_save = onnx.save

def save_then_terminate(*args, **kwargs):
    real_save(*args, **kwargs)           # the staged file is complete on disk now
    os.kill(os.getpid(), signal.SIGTERM)

onnx.save = save_then_terminate
from onnx_snn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_save_leaves_no_file(files: Path) -> None:
    before = snapshot(files)
    done = subprocess.run([sys.executable, "-c", SIGTERM_DURING_SAVE, "convert",
                           str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                           "-o", str(files / "snn.onnx"), "--json", str(files / "r.json"),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr.strip() == "onnx-snn: interrupted (SIGTERM); nothing was written"
    assert snapshot(files) == before


def test_progress_bars_leave_nothing_on_a_non_terminal_stderr(files: Path) -> None:
    done = subprocess.run(["onnx-snn", "convert", str(files / "ann.onnx"), "--calib",
                           str(files / "calib.npz"), "-o", str(files / "snn.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
