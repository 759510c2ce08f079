"""Export a torch ``nn.Module`` to ONNX with a dynamic batch axis."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnx

from onnx_snn.io.models import load_model


def export_torch(module: Any, example_input: Any, path: str | Path | None = None, *,
                 dynamo: bool = True, input_names: list[str] | None = None,
                 output_names: list[str] | None = None, opset: int | None = None
                 ) -> onnx.ModelProto:
    """Export ``module`` (in eval mode) and return the ONNX model.

    ``example_input``: a tensor or tuple of tensors; axis 0 of every input and
    output is exported as a dynamic batch axis. ``dynamo=True`` uses the
    torch.export-based exporter (the current default, which writes weights to
    ``<path>.data``), ``dynamo=False`` the TorchScript one. With ``path`` the
    files are kept there; otherwise a temporary folder is used.
    """
    import torch

    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    input_names = input_names or (["x"] if len(inputs) == 1 else
                                  [f"x{i}" for i in range(len(inputs))])
    module = module.eval()
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        target = Path(path) if path is not None else Path(scratch) / "model.onnx"
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(module, inputs, str(target), dynamo=True, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_shapes=tuple({0: batch} for _ in inputs))
        else:
            output_names = output_names or ["y"]
            axes = {name: {0: "N"} for name in [*input_names, *output_names]}
            torch.onnx.export(module, inputs, str(target), dynamo=False,
                              opset_version=opset or 17, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes)
        return load_model(target)


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence a library's logger (torch's exporter logs progress and skipped ops)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
