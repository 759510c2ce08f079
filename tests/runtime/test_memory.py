"""What a run may use: the cgroup and address-space limits are read as the kernel
states them, and a command under a limit either fits or says so in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import mlp_model

from onnx_snn import convert
from onnx_snn.runtime import memory
from onnx_snn.runtime.memory import cgroup_left, memory_budget


def test_cgroup_v2_limit_less_usage(tmp_path: Path) -> None:
    group = tmp_path / "fs" / "user.slice" / "job"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("3000000000\n")
    (group / "memory.current").write_text("1000000000\n")
    (tmp_path / "cgroup").write_text("0::/user.slice/job\n")
    assert cgroup_left(tmp_path / "fs", tmp_path / "cgroup") == 2_000_000_000


def test_cgroup_v2_without_a_limit(tmp_path: Path) -> None:
    group = tmp_path / "fs" / "job"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("max\n")
    (group / "memory.current").write_text("1000\n")
    (tmp_path / "cgroup").write_text("0::/job\n")
    assert cgroup_left(tmp_path / "fs", tmp_path / "cgroup") is None


def test_cgroup_v1_limit_less_usage(tmp_path: Path) -> None:
    group = tmp_path / "fs" / "memory" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text("500000000\n")
    (group / "memory.usage_in_bytes").write_text("100000000\n")
    (tmp_path / "cgroup").write_text("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    assert cgroup_left(tmp_path / "fs", tmp_path / "cgroup") == 400_000_000


def test_a_given_limit_is_the_budget(monkeypatch) -> None:
    """A given limit as it is; without one, half of what is available (fixed here, as the
    machine's own figure moves between two reads)."""
    assert memory_budget("2GB") == 2 * 10**9
    monkeypatch.setattr(memory, "available_memory", lambda: 3_000_000_001)
    assert memory_budget() == 1_500_000_000


@pytest.mark.skipif(sys.platform != "linux", reason="prlimit and /proc are Linux's")
def test_an_address_space_limit_is_seen() -> None:
    """Under ``prlimit --as``, the available memory is at most the limit less the
    process's own virtual size."""
    limit = 4 * 2**30
    done = subprocess.run(["prlimit", f"--as={limit}", sys.executable, "-c",
                           "from onnx_snn.runtime.memory import available_memory; "
                           "print(available_memory())"],
                          capture_output=True, text=True, check=True)
    assert 0 < int(done.stdout) < limit


@pytest.mark.skipif(sys.platform != "linux", reason="prlimit is Linux's")
def test_a_command_under_an_address_space_limit_fits_or_says_so(tmp_path: Path) -> None:
    """eval at T = 4096 under a 2 GiB address space succeeds (the budget is half of
    what the limit leaves the process); a T whose outputs alone cannot fit is one line,
    not a kill or an allocator traceback."""
    import onnx

    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 4, size=200)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = tmp_path / "snn.onnx"
    onnx.save(convert(mlp_model([8, 64, 64, 4], seed=4), x, progress=False).model, model)
    argv = ["onnx-snn", "eval", str(model), "--data", str(tmp_path / "data.npz"),
            "--timesteps", "4096"]
    fits = subprocess.run(["prlimit", f"--as={2 * 2**30}", *argv], capture_output=True,
                          text=True, timeout=300)
    assert fits.returncode == 0, fits.stderr
    assert "4096" in fits.stdout
    tight = subprocess.run(["prlimit", f"--as={2 * 2**30}", *argv[:-1], "4611686018427387904"],
                           capture_output=True, text=True, timeout=300)
    assert tight.returncode == 1 and tight.stderr.count("\n") == 1
    assert tight.stderr.startswith("onnx-snn: error: T = 4611686018427387904 keeps")


@pytest.fixture
def memory_group(tmp_path: Path):
    """Run a command in a new cgroup v1 memory group under this process's own, limited
    to a given size; skipped where this process may not make one."""
    line = next((line for line in Path("/proc/self/cgroup").read_text().splitlines()
                 if ":memory:" in line), None) if Path("/proc/self/cgroup").exists() else None
    if line is None:
        pytest.skip("no cgroup v1 memory controller")
    group = Path("/sys/fs/cgroup/memory", line.split(":", 2)[2].lstrip("/"),
                 f"onnx-snn-test-{tmp_path.name}")
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a memory cgroup: {error}")

    def run(limit: int, argv: list[str]) -> subprocess.CompletedProcess:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        enter = f'echo $$ > {group / "cgroup.procs"} && exec "$@"'
        return subprocess.run(["sh", "-c", enter, "sh", *argv], capture_output=True,
                              text=True, timeout=300)

    yield run
    group.rmdir()


@pytest.mark.skipif(sys.platform != "linux", reason="cgroups are Linux's")
def test_commands_under_a_cgroup_limit_fit_or_say_so(tmp_path: Path, memory_group) -> None:
    """Under a 512 MiB cgroup limit, calibrating one batch whose activation alone is
    655 MB runs in parts and gets numpy's maximum (given a limit above the group's, the
    same command is killed); eval at T = 4096 fits; a T whose outputs cannot fit is
    one line."""
    import json

    import onnx

    model = mlp_model([16, 4096, 4], seed=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40_000, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    onnx.save(model, tmp_path / "ann.onnx")
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    expected = max(float(np.maximum(block @ weights["w0"] + weights["b0"], 0).max())
                   for block in np.array_split(x, 10))
    argv = ["onnx-snn", "convert", str(tmp_path / "ann.onnx"), "--calib",
            str(tmp_path / "calib.npz"), "--batch-size", "40000", "--no-progress",
            "-o", str(tmp_path / "snn.onnx"), "--save-calibration",
            str(tmp_path / "scales.json")]
    limit = 512 * 2**20
    unplanned = memory_group(limit, [*argv, "--memory-limit", "100GB"])
    assert unplanned.returncode in (-9, 137), unplanned.stderr
    planned = memory_group(limit, argv)
    assert planned.returncode == 0, planned.stderr
    layers = json.loads((tmp_path / "scales.json").read_text())["layers"]
    assert layers[0]["scale"] == pytest.approx(expected, rel=1e-6)

    data = tmp_path / "data.npz"
    np.savez(data, x=x[:200], y=rng.integers(0, 4, size=200))
    evaluate = ["onnx-snn", "eval", str(tmp_path / "snn.onnx"), "--data", str(data),
                "--timesteps"]
    fits = memory_group(limit, [*evaluate, "4096"])
    assert fits.returncode == 0, fits.stderr
    assert "4096" in fits.stdout
    tight = memory_group(limit, [*evaluate, "4611686018427387904"])
    assert tight.returncode == 1 and tight.stderr.count("\n") == 1, tight.stderr
    assert tight.stderr.startswith("onnx-snn: error: T = 4611686018427387904 keeps")
