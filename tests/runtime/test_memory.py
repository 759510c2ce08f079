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
