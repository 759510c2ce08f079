"""``python -m onnx_snn.cli``: the same as the ``onnx-snn`` script."""

import sys

from onnx_snn.cli import main

sys.exit(main())
