"""The README's set-up commands and quickstart work as written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
INSTALL = 'python -m pip install -e ".[dev]"'


def setup_commands() -> list[str]:
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", README, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_two_setup_commands_and_ci_runs_the_test_one() -> None:
    demo, tests = setup_commands()
    assert demo == f"{INSTALL} && onnx-snn demo"
    assert tests == f"{INSTALL} && python -m pytest"
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_demo_command_meets_the_accuracy_targets(tmp_path) -> None:
    """The demo (README's first command, install already done): the SNN at T = 64 is
    within 0.5 points of the ANN and at T = 32 within 1 point."""
    demo = setup_commands()[0].split(" && ")[1]
    report = tmp_path / "demo.json"
    done = subprocess.run([*demo.split(), "--json", str(report)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ANN accuracy" in done.stdout and "T =  64" in done.stdout
    result = json.loads(report.read_text())
    ann, snn = result["ann_accuracy"], result["snn_accuracy"]
    assert ann > 0.97
    assert ann - snn["64"] <= 0.005
    assert ann - snn["32"] <= 0.01


def test_python_quickstart_runs(tmp_path, monkeypatch) -> None:
    code = re.search(r"## Python quickstart\n\n```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README quickstart", "exec"), {})
    assert (tmp_path / "digits_snn.onnx").exists()
    layers = json.loads((tmp_path / "digits_snn.json").read_text())["layers"]
    assert len(layers) == 3
