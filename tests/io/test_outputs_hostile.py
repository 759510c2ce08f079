"""Hostile conditions for the output commit (``onnx_snn.io.outputs``): outputs that are
open descriptors (``/dev/stdout`` appended to a log), destinations that change while a
command runs, signals at exact points of staging and commit, replaced files' modes,
stdout's reader going away, outputs inside another output's folder, and empty paths.

Signal timing is deterministic: a tiny LD_PRELOAD shim (compiled here; the tests skip
without a C compiler) raises a signal right after the Nth ``open``, ``mkdir`` or
``rename`` whose path holds a given text, inside the real console script.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlp_model
from hostile import assert_one_line_error, expect_error, rendered_lines, run_main, snapshot

from onnx_snn import OnnxSnnError, convert
from onnx_snn.cli.commands import COMMANDS, Command
from onnx_snn.io.outputs import OutputSet, write_json

SIZES = [8, 16, 4]
DATA = {"layers": ["relu0"], "n": 3}
TEXT = json.dumps(DATA, indent=2) + "\n"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    """ann.onnx, calib.npz, data.npz (labelled) and its converted snn.onnx."""
    folder = tmp_path_factory.mktemp("originals")
    x = np.random.default_rng(0).normal(size=(40, SIZES[0])).astype(np.float32)
    onnx.save(mlp_model(SIZES, seed=1), folder / "ann.onnx")
    np.savez(folder / "calib.npz", x=x)
    np.savez(folder / "data.npz", x=x, y=np.zeros(40, np.int64))
    convert(folder / "ann.onnx", x, progress=False).save(folder / "snn.onnx")
    return folder


@pytest.fixture
def work(tmp_path: Path, originals: Path) -> Path:
    for path in originals.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def convert_argv(d: Path, *more: str) -> list[str]:
    return ["convert", str(d / "ann.onnx"), "--calib", str(d / "calib.npz"), "--no-progress",
            *more]


def eval_argv(d: Path, *more: str) -> list[str]:
    return ["eval", str(d / "snn.onnx"), "--data", str(d / "data.npz"), "--timesteps", "4",
            *more]


def report_argv(d: Path, *more: str) -> list[str]:
    return ["report", str(d / "snn.onnx"), "--data", str(d / "data.npz"), "--timesteps", "4",
            *more]


def script(argv: list[str], cwd: Path, env: dict | None = None, **streams
           ) -> subprocess.CompletedProcess:
    """The console script as a shell would run it; stdout/stderr as given (default: pipes)."""
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **streams}
    command = shutil.which("onnx-snn") or sys.executable
    prefix = [command] if command.endswith("onnx-snn") else [command, "-m", "onnx_snn.cli"]
    return subprocess.run([*prefix, *argv], cwd=cwd, env={**os.environ, **(env or {})},
                          timeout=120, check=False, **streams)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------- 1. descriptors are written through

@contextlib.contextmanager
def descriptor_on(fd: int, path: Path, append: bool):
    """``fd`` opened on ``path`` as ``>> path`` does (append) or at the end of what is
    there without O_APPEND (as a shell's ``1<>path`` after earlier output)."""
    saved = os.dup(fd)
    opened = os.open(path, os.O_WRONLY | (os.O_APPEND if append else 0))
    os.lseek(opened, 0, os.SEEK_END)
    os.dup2(opened, fd)
    os.close(opened)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def through_link(tmp_path: Path, to: str) -> str:
    (tmp_path / "link.json").symlink_to(to)
    return str(tmp_path / "link.json")


DESCRIPTOR_PATHS = {
    "dev-stdout": lambda d, log: "/dev/stdout",
    "dev-fd-1": lambda d, log: "/dev/fd/1",
    "proc-self-fd-1": lambda d, log: "/proc/self/fd/1",
    "link-to-dev-stdout": lambda d, log: through_link(d, "/dev/stdout"),
    "the-log-itself": lambda d, log: str(log),
}


@pytest.mark.parametrize("append", [True, False], ids=["append", "offset"])
@pytest.mark.parametrize("form", list(DESCRIPTOR_PATHS))
def test_stdout_paths_write_through_the_open_file(form: str, append: bool,
                                                  tmp_path: Path) -> None:
    """The file stdout is open on keeps its inode and earlier lines; the JSON follows them."""
    log = tmp_path / "run.log"
    log.write_bytes(b"earlier line\n")
    inode = log.stat().st_ino
    path = DESCRIPTOR_PATHS[form](tmp_path, log)
    with descriptor_on(1, log, append):
        write_json(path, DATA)
    assert log.read_text() == "earlier line\n" + TEXT
    assert log.stat().st_ino == inode
    assert set(listing(tmp_path)) <= {"run.log", "link.json"}


def test_dev_stderr_writes_through_fd_2(tmp_path: Path) -> None:
    log = tmp_path / "err.log"
    log.write_text("warning before\n")
    with descriptor_on(2, log, append=True):
        write_json("/dev/stderr", DATA)
    assert log.read_text() == "warning before\n" + TEXT
    assert listing(tmp_path) == ["err.log"]


def test_dev_stdout_on_a_pipe(tmp_path: Path) -> None:
    read, write = os.pipe()
    saved = os.dup(1)
    os.dup2(write, 1)
    os.close(write)
    try:
        write_json("/dev/stdout", DATA)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read().decode() == TEXT


@pytest.mark.parametrize("fd_state,needle", [("read-only", "reading only"),
                                             ("closed", "is not open")])
def test_a_descriptor_that_cannot_be_written_is_refused(fd_state: str, needle: str,
                                                        tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("input\n")
    fd = os.open(source, os.O_RDONLY)
    if fd_state == "closed":
        os.close(fd)
    try:
        with pytest.raises(OnnxSnnError, match=f"/dev/fd/{fd}: descriptor {fd} .*{needle}"):
            write_json(f"/dev/fd/{fd}", DATA)
    finally:
        if fd_state != "closed":
            os.close(fd)
    assert source.read_text() == "input\n" and listing(tmp_path) == ["in.txt"]


def test_eval_json_to_dev_stdout_appended_to_a_log(work: Path) -> None:
    """``onnx-snn eval ... --json /dev/stdout >> run.log`` used to replace run.log."""
    log = work / "run.log"
    log.write_text("earlier run\n")
    with open(log, "ab") as out:
        done = script(eval_argv(work, "--json", "/dev/stdout"), work, stdout=out)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert text.startswith("earlier run\nscored output: y\n")
    report = json.loads(text[text.index("{"):])
    assert report["snn_accuracy"].keys() == {"4"} and report["output"] == "y"


def test_convert_model_to_dev_stdout_in_a_file(work: Path) -> None:
    """``convert -o /dev/stdout > snn.bin``: the model, then the summary, in that file."""
    out = work / "snn.bin"
    with open(out, "wb") as handle:
        done = script(convert_argv(work, "-o", "/dev/stdout"), work, stdout=handle)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    summary = data.index(b"converted 1 Relu")
    model = onnx.load_from_string(data[:summary])
    assert [value.name for value in model.graph.input][0] == "x"
    assert listing(work) == ["ann.onnx", "calib.npz", "data.npz", "snn.bin", "snn.onnx"]


# ------------------------------------------- 2. a destination that changes before the commit

def folder_with_file(path: Path) -> None:
    path.mkdir()
    (path / "precious.txt").write_text("keep me\n")


def link_elsewhere(path: Path) -> None:
    (path.parent / "elsewhere.txt").write_text("keep me\n")
    path.symlink_to("elsewhere.txt")


APPEARING = {"folder-with-a-file": folder_with_file, "symlink": link_elsewhere,
             "fifo": lambda path: os.mkfifo(path)}


@pytest.mark.parametrize("kind", list(APPEARING))
def test_what_appears_at_a_file_output_is_left_alone(kind: str, tmp_path: Path) -> None:
    (tmp_path / "first.txt").write_text("old first\n")
    outputs = OutputSet()
    outputs.add_text(tmp_path / "first.txt", "new first\n")
    outputs.add_json(tmp_path / "out.json", DATA)
    APPEARING[kind](tmp_path / "out.json")
    before = snapshot(tmp_path)
    reader = os.open(tmp_path / "out.json", os.O_RDONLY | os.O_NONBLOCK) \
        if kind == "fifo" else None  # a writer would not block, and is seen
    try:
        with pytest.raises(OnnxSnnError, match=r"out\.json: changed while the command ran"):
            outputs.commit()
        if reader is not None:
            with contextlib.suppress(BlockingIOError):
                assert os.read(reader, 100) == b""
    finally:
        if reader is not None:
            os.close(reader)
    assert (tmp_path / "first.txt").read_text() == "old first\n"  # none of them, not some
    after = snapshot(tmp_path)
    assert after == {k: v for k, v in before.items() if not Path(k).name.endswith(".tmp")}
    assert not outputs.written


@pytest.mark.parametrize("existing", [False, True], ids=["absent", "existing"])
def test_a_folder_output_that_changed_is_not_replaced(existing: bool, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    if existing:
        rep.mkdir()
        (rep / "report.json").write_text("{}\n")
    outputs = OutputSet()
    outputs.add_folder(rep, lambda f: ((f / "report.json").write_text("[]\n"),
                                       ("report.json",))[1])
    rep.mkdir(exist_ok=True)
    (rep / "notes.txt").write_text("mine\n")
    with pytest.raises(OnnxSnnError, match="rep: "):
        outputs.commit()
    assert listing(rep) == (["notes.txt", "report.json"] if existing else ["notes.txt"])
    assert (rep / "notes.txt").read_text() == "mine\n"
    assert listing(tmp_path) == ["rep"]


def test_the_cli_refuses_a_folder_made_at_its_output(work: Path, capsys, monkeypatch) -> None:
    """A folder made at a staged output while the command runs: one error line, and the
    folder and its file stay."""
    def run(args):
        args.outputs.add_text(work / "out.txt", "result\n")
        folder_with_file(work / "out.txt")
        return {}

    monkeypatch.setitem(COMMANDS, "doctor", Command(run))
    status, _, err = run_main(["doctor"], capsys)
    assert status == 1
    assert_one_line_error(err, ["out.txt", "changed while the command ran", "folder"])
    assert (work / "out.txt" / "precious.txt").read_text() == "keep me\n"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


# -------------------------------------------------------------- 3, 4. signals, deterministic

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int seen;
static void after(const char *call, const char *path) {
    const char *want = getenv("SHIM_CALL"), *match = getenv("SHIM_MATCH"),
        *also = getenv("SHIM_ALSO");
    if (!want || strcmp(want, call) || !path || !match || !strstr(path, match)) return;
    if (also && !strstr(path, also)) return;
    if (++seen == atoi(getenv("SHIM_AT"))) raise(atoi(getenv("SHIM_SIGNAL")));
}
#define REAL(name) static __typeof__(name) *real; if (!real) real = dlsym(RTLD_NEXT, #name)
#define MODE mode_t mode = 0; if (flags & O_CREAT) { va_list ap; va_start(ap, flags); \
    mode = va_arg(ap, int); va_end(ap); }
int rename(const char *a, const char *b) { REAL(rename); int r = real(a, b);
    after("rename", b); return r; }
int renameat(int fa, const char *a, int fb, const char *b) { REAL(renameat);
    int r = real(fa, a, fb, b); after("rename", b); return r; }
int mkdir(const char *p, mode_t m) { REAL(mkdir); int r = real(p, m); after("mkdir", p);
    return r; }
int open(const char *p, int flags, ...) { MODE REAL(open); int r = real(p, flags, mode);
    if (flags & O_CREAT) after("open", p); return r; }
int open64(const char *p, int flags, ...) { MODE REAL(open64); int r = real(p, flags, mode);
    if (flags & O_CREAT) after("open", p); return r; }
int openat(int d, const char *p, int flags, ...) { MODE REAL(openat);
    int r = real(d, p, flags, mode); if (flags & O_CREAT) after("open", p); return r; }
int openat64(int d, const char *p, int flags, ...) { MODE REAL(openat64);
    int r = real(d, p, flags, mode); if (flags & O_CREAT) after("open", p); return r; }
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    folder = tmp_path_factory.mktemp("shim")
    (folder / "shim.c").write_text(SHIM)
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(folder / "shim.so"),
                    str(folder / "shim.c"), "-ldl"], check=True, capture_output=True)
    return folder / "shim.so"


def signalled(argv: list[str], cwd: Path, shim: Path, call: str, match: tuple[str, ...],
              at: int, signum: int) -> subprocess.CompletedProcess:
    """The console script, with ``signum`` raised right after the ``at``-th ``call``
    (open, mkdir, rename) of a path that holds every text in ``match``."""
    env = {"LD_PRELOAD": str(shim), "SHIM_CALL": call, "SHIM_MATCH": match[0],
           "SHIM_AT": str(at), "SHIM_SIGNAL": str(int(signum)),
           **({"SHIM_ALSO": match[1]} if len(match) > 1 else {})}
    done = script(argv, cwd, env)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())


@pytest.mark.parametrize("at,signum", [(1, signal.SIGTERM), (2, signal.SIGTERM),
                                       (3, signal.SIGTERM), (2, signal.SIGINT),
                                       (1, signal.SIGHUP)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_a_signal_during_the_commit_lets_it_finish(at: int, signum: signal.Signals,
                                                   work: Path, shim: Path) -> None:
    """A signal after the 1st, 2nd or 3rd rename of the commit: all three outputs are new,
    no file is set aside, and the message says what was written."""
    for name in ("new.onnx", "r.json", "calib.json"):
        (work / name).write_text("old\n")
    argv = convert_argv(work, "-o", "new.onnx", "--json", "r.json", "--save-calibration",
                        "calib.json")
    done = signalled(argv, work, shim, "rename", (str(work.resolve()),), at, signum)
    assert done.returncode == 128 + signum, done.stderr
    [line] = rendered_lines(done.stderr)
    assert line == f"onnx-snn: interrupted ({signum.name}) after the outputs were written: " \
        "new.onnx, calib.json, r.json"
    onnx.checker.check_model(onnx.load(work / "new.onnx"))
    assert [layer["node"] for layer in json.loads((work / "r.json").read_text())["layers"]] \
        == ["relu0"]
    assert [layer["node"] for layer in json.loads((work / "calib.json").read_text())["layers"]] \
        == ["relu0"]
    assert listing(work) == ["ann.onnx", "calib.json", "calib.npz", "data.npz", "new.onnx",
                             "r.json", "snn.onnx"]


STAGING_POINTS = {  # (call, path texts, which one): where the signal comes
    "staged-model-created": ("open", (".new.onnx.", ".tmp"), 1),
    "staged-model-written": ("open", (".new.onnx.", ".tmp"), 2),
    "staged-json-created": ("open", (".r.json.", ".tmp"), 1),
    "writability-probe": ("open", (".probe",), 1),
    "report-folder-created": ("mkdir", ("/.rep.",), 1),
}
STAGING_CASES = [(point, signal.SIGTERM) for point in STAGING_POINTS] + \
    [("staged-model-created", signal.SIGINT), ("staged-json-created", signal.SIGHUP)]


@pytest.mark.parametrize("point,signum", STAGING_CASES,
                         ids=lambda v: getattr(v, "name", str(v)))
def test_a_signal_while_staging_leaves_nothing(point: str, signum: signal.Signals,
                                               work: Path, shim: Path) -> None:
    (work / "r.json").write_text("old\n")
    argv = report_argv(work, "-o", "rep") if point.startswith("report") else \
        convert_argv(work, "-o", "new.onnx", "--json", "r.json")
    call, match, at = STAGING_POINTS[point]
    before = snapshot(work)
    done = signalled(argv, work, shim, call, match, at, signum)
    assert done.returncode == 128 + signum, done.stderr
    assert rendered_lines(done.stderr) == \
        [f"onnx-snn: interrupted ({signum.name}); nothing was written"]
    assert snapshot(work) == before


# ------------------------------------------------------------- 5. demo's output folder

def fake_demo(stop: str):
    def run_demo(out_dir, outputs, **_):
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # as the real demo does
        outputs.add_text(Path(out_dir) / "digits_snn.json", "{}\n")
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        if stop == "error":
            raise OnnxSnnError("training failed")
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        return {"done": True}
    return run_demo


@pytest.mark.parametrize("stop,status", [("ctrl-c", 130), ("sigterm", 143), ("error", 1)])
@pytest.mark.parametrize("parent_exists", [False, True], ids=["new-parent", "old-parent"])
def test_a_stopped_demo_removes_the_folders_it_made(stop: str, status: int,
                                                    parent_exists: bool, tmp_path: Path,
                                                    capsys, monkeypatch) -> None:
    monkeypatch.setattr("onnx_snn.demo.run.run_demo", fake_demo(stop))
    if parent_exists:
        (tmp_path / "a").mkdir()
    got, _, err = run_main(["demo", "--out", tmp_path / "a" / "b"], capsys)
    assert got == status, err
    assert len(rendered_lines(err)) == 1
    assert listing(tmp_path) == (["a"] if parent_exists else [])
    if parent_exists:
        assert listing(tmp_path / "a") == []


def test_a_finished_demo_keeps_its_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("onnx_snn.demo.run.run_demo", fake_demo("none"))
    assert run_main(["demo", "--out", tmp_path / "a" / "b"], capsys)[0] == 0
    assert listing(tmp_path / "a" / "b") == ["digits_snn.json"]


# --------------------------------------------------------------- 6. a replaced file's mode

@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444, 0o755])
def test_a_replaced_file_keeps_its_mode(mode: int, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old\n")
    path.chmod(mode)
    write_json(path, DATA)
    assert path.read_text() == TEXT
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "out.json", DATA)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o640


def test_convert_over_a_private_model_keeps_it_private(work: Path, capsys) -> None:
    (work / "snn.onnx").chmod(0o600)
    assert run_main(convert_argv(work, "-o", work / "snn.onnx"), capsys)[0] == 0
    assert stat.S_IMODE((work / "snn.onnx").stat().st_mode) == 0o600


# ------------------------------------------------------ 7. the summary comes after the files

def closed_pipe():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command prints anything
    return write


@pytest.mark.parametrize("command", ["convert", "report", "eval"])
def test_a_closed_stdout_loses_no_file(command: str, work: Path) -> None:
    argv = {"convert": convert_argv(work, "-o", "new.onnx", "--json", "r.json"),
            "report": report_argv(work, "-o", "rep", "--json", "r.json"),
            "eval": eval_argv(work, "--json", "r.json")}[command]
    write = closed_pipe()
    try:
        done = script(argv, work, stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert done.stderr == b""
    assert json.loads((work / "r.json").read_text())
    expected = {"convert": "new.onnx", "report": "rep", "eval": None}[command]
    if expected == "new.onnx":
        onnx.checker.check_model(onnx.load(work / "new.onnx"))
    elif expected == "rep":
        assert "report.json" in listing(work / "rep")


def test_the_summary_is_printed_once_the_files_are_in_place(work: Path) -> None:
    command = shutil.which("onnx-snn")
    prefix = [command] if command else [sys.executable, "-m", "onnx_snn.cli"]
    with subprocess.Popen([*prefix, *convert_argv(work, "-o", "new.onnx")], cwd=work,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        first = process.stdout.readline()
        assert first.startswith(b"converted 1 Relu")
        assert (work / "new.onnx").is_file()  # already there when the line arrives
        process.stdout.close()
    assert process.returncode in (0, 128 + signal.SIGPIPE)


# ----------------------------------- 8, 9. outputs inside another's folder, and empty paths

def make_folder(path: Path) -> Path:
    path.mkdir()
    return path


OVERLAPS = {
    "json-inside-report-folder": (lambda d: report_argv(d, "-o", make_folder(d / "rep"),
                                                        "--json", d / "rep" / "x.json"),
                                  ["x.json", "inside the output folder"]),
    "json-deep-inside-report-folder": (lambda d: report_argv(
        d, "-o", d / "rep", "--json", d / "rep" / "sub" / "x.json"),
        ["x.json", "inside the output folder"]),
    "json-is-the-report-folder": (lambda d: report_argv(d, "-o", d / "rep", "--json",
                                                        d / "rep"), ["given for two outputs"]),
    "json-is-the-model": (lambda d: convert_argv(d, "-o", d / "new.onnx", "--json",
                                                 d / "new.onnx"), ["given for two outputs"]),
    "calibration-is-the-model-by-another-name": (lambda d: convert_argv(
        d, "-o", d / "new.onnx", "--save-calibration", f"{d}/./new.onnx"),
        ["given for two outputs"]),
}


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_overlapping_outputs_are_refused_before_any_work(case: str, work: Path,
                                                         capsys) -> None:
    build, needles = OVERLAPS[case]
    argv = build(work)
    expect_error(argv, capsys, [work], needles, 1)


def test_a_staged_output_inside_a_staged_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OnnxSnnError, match="inside the output folder"):
        with OutputSet() as outputs:
            outputs.add_folder(tmp_path / "rep", lambda f: ())
            outputs.add_json(tmp_path / "rep" / "x.json", DATA)
    assert listing(tmp_path) == []


EMPTY = {
    "eval-json": (lambda d: eval_argv(d, "--json", ""), "--json ''"),
    "convert-json": (lambda d: convert_argv(d, "-o", "new.onnx", "--json", ""), "--json ''"),
    "convert-save-calibration": (lambda d: convert_argv(d, "-o", "new.onnx",
                                                        "--save-calibration", ""),
                                 "--save-calibration ''"),
    "convert-output": (lambda d: convert_argv(d, "-o", ""), "-o ''"),
    "report-out-dir": (lambda d: report_argv(d, "-o", ""), "-o ''"),
    "report-json": (lambda d: report_argv(d, "-o", "rep", "--json", ""), "--json ''"),
    "inspect-json": (lambda d: ["inspect", d / "ann.onnx", "--json", ""], "--json ''"),
    "demo-out": (lambda d: ["demo", "--out", ""], "--out ''"),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_an_empty_output_path_is_refused(case: str, work: Path, capsys,
                                         monkeypatch) -> None:
    monkeypatch.chdir(work)
    build, option = EMPTY[case]
    expect_error(build(work), capsys, [work], [option, "empty", "expected a file name"], 1)


def test_an_empty_path_is_refused_by_the_api(tmp_path: Path) -> None:
    with pytest.raises(OnnxSnnError, match="empty"):
        write_json("", DATA)
    assert listing(tmp_path) == []
