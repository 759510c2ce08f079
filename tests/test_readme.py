"""The README's set-up commands, quickstart, walkthrough and deployment block work as
written, and the command reference (docs/cli.md) lists each command's options."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLI_REFERENCE = (ROOT / "docs" / "cli.md").read_text()
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


# --------------------------------------------------------------------------- the command line

def section(title: str, level: str = "##") -> str:
    """The README text under a heading, up to the next heading of the same level."""
    match = re.search(rf"^{level} {re.escape(title)}\n(.*?)(?=^{level} |\Z)", README, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def run_bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_every_synopsis_lists_exactly_the_options_of_its_command() -> None:
    """docs/cli.md's synopses are checked against the parser, option by option."""
    from onnx_snn.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    synopses = {block.split()[1]: block for block in blocks(CLI_REFERENCE, "text")}
    assert set(synopses) == set(commands)
    for name, command in commands.items():
        options = [set(action.option_strings) for action in command._actions
                   if action.option_strings and "--help" not in action.option_strings]
        written = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopses[name]))
        missing = [sorted(forms) for forms in options if not forms & written]
        unknown = written - set().union(*options)
        assert not missing and not unknown, (name, missing, unknown)


def test_walkthrough_and_the_cpp_example_run_as_written(tmp_path) -> None:
    """Every block of the README's command-line walkthrough, in order, in a fresh folder,
    then the C++ deployment block on its output; checked against answers computed here:
    the ANN's accuracy straight from onnxruntime, and the C++ classes against the
    Python session's."""
    import numpy as np
    import onnxruntime as ort

    from onnx_snn.runtime import SpikingSession

    for name in ("examples", "custom_ops"):  # the C++ block runs from the repository root
        (tmp_path / name).symlink_to(ROOT / name)
    walkthrough = blocks(section("Walkthrough", "###"), "bash")
    assert len(walkthrough) >= 4
    for script in walkthrough:
        done = run_bash(script, tmp_path)
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"

    test = np.load(tmp_path / "demo" / "digits_test.npz")
    ann = ort.InferenceSession(str(tmp_path / "demo" / "digits_ann.onnx"))
    logits = ann.run(None, {ann.get_inputs()[0].name: test["x"]})[0]
    ann_accuracy = float((logits.argmax(axis=1) == test["y"]).mean())
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ann_accuracy"] == ann_accuracy
    assert result["snn_accuracy"]["32"] >= ann_accuracy - 0.01
    for folder in ("best_report", "streaming_report"):
        assert json.loads((tmp_path / folder / "report.json").read_text())["timesteps"] == 16

    [deployment] = blocks(section("Deployment without Python"), "bash")
    if shutil.which("cmake") is None and os.environ.get("ONNX_SNN_REQUIRE_NATIVE") != "1":
        pytest.skip("cmake is not installed: the C++ example cannot be built")
    done = run_bash(deployment, tmp_path)
    assert done.returncode == 0, f"{deployment}\n{done.stdout}\n{done.stderr}"
    expected = SpikingSession(str(tmp_path / "snn.onnx")).run(
        np.load(tmp_path / "x.npy"), 32).predictions()[-1]
    classes = [int(line) for line in done.stdout.splitlines() if line.isdigit()]  # cmake talks
    assert classes == expected.tolist()
