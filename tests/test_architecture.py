"""The package's layout (ARCHITECTURE.md): stages import only the stages below them,
no import cycle, small modules, and the public names in place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import onnx_snn

PACKAGE = Path(onnx_snn.__file__).parent
ROOT = PACKAGE.parent
#: Lowest first: a module may import modules of its own layer or of a lower one.
LAYERS = [
    ["onnx_snn.errors", "onnx_snn.version", "onnx_snn.validation"],
    ["onnx_snn.io"],
    ["onnx_snn.graph"],
    ["onnx_snn.ops"],
    ["onnx_snn.snn"],
    ["onnx_snn.export"],
    ["onnx_snn.runtime"],
    ["onnx_snn.calibration"],
    ["onnx_snn.measure"],
    ["onnx_snn.config"],
    ["onnx_snn.search"],
    ["onnx_snn.api"],
    ["onnx_snn.demo"],
    ["onnx_snn.cli"],
    ["onnx_snn"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every onnx_snn module and the onnx_snn modules it imports (at any depth of its
    code: imports inside functions count too)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        found[name] = {t for t in targets if t == "onnx_snn" or t.startswith("onnx_snn.")}
    return found


def layer(module: str) -> int:
    """The index of the most specific layer entry that ``module`` belongs to."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS)
               for prefix in prefixes if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer"
    return max(matches)[1]


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{module} -> {target}" for module, targets in imports().items()
              for target in targets if layer(target) > layer(module)]
    assert not upward, upward


def test_no_import_cycle() -> None:
    graph = imports()
    visiting, done, cycles = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(visiting[visiting.index(module):] + [module])
            return
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            if target in graph and target != module:
                visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)
    assert not cycles, cycles


def test_stages_are_subpackages_and_modules_are_small() -> None:
    subpackages = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    top_modules = [p.name for p in PACKAGE.glob("*.py")]
    assert len(subpackages) >= 5, subpackages
    assert len(top_modules) <= 8, top_modules
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_layers_in_architecture_md_match() -> None:
    """ARCHITECTURE.md lists the same stages in the same order as LAYERS."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    order = re.findall(r"^\d+\. `([\w./]+)`", text, re.M)
    expected = [prefixes[0].replace("onnx_snn.", "") for prefixes in LAYERS[1:9]]
    assert order == expected, order


def test_public_names_keep_working() -> None:
    from onnx_snn import (  # noqa: F401
        BalancingHookFactory,
        Calibration,
        ConversionConfig,
        HookFactory,
        IFNeuron,
        Neuron,
        NeuronFactory,
        OnnxSnnError,
        Pattern,
        PatternPass,
        SpikingModel,
        SpikingSession,
        VoltageHook,
        calibrate,
        compose,
        convert,
        native_library_path,
        run_passes,
        run_snn,
        session_options,
        simulate_if,
    )
    from onnx_snn.export import export_torch  # noqa: F401
    from onnx_snn.runtime import SpikingOutput  # noqa: F401
    assert set(onnx_snn.__all__) <= set(dir(onnx_snn))


def test_only_io_metadata_parses_the_model_metadata() -> None:
    """A converted model's metadata is JSON that ``onnx_snn.io.metadata`` alone parses:
    no other module calls json.loads on the metadata or one of its keys."""
    owner = PACKAGE / "io" / "metadata.py"
    keys = re.compile(r"json\.loads\([^)]*(props|metadata|custom_metadata_map|_STATES|"
                      r"ACCUMULATORS|DIFFERENCES|TD_OUTPUTS|OUTPUT_SCALES|NEURONS|TIME_SUMS)")
    parsing = sorted(str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
                     if path != owner and keys.search(path.read_text()))
    assert not parsing, parsing
