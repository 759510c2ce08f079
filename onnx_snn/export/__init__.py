"""Writing models out: a converted model in the standard or streaming format
(``formats``, ``standard``, ``streaming``), and a torch module as ONNX (``torch``)."""

from onnx_snn.export.formats import FORMATS, check_format, export_format
from onnx_snn.export.torch import export_torch

__all__ = ["FORMATS", "check_format", "export_format", "export_torch"]
