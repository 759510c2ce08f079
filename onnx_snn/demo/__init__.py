"""The built-in demo (``onnx-snn demo``): scikit-learn's digits and a small BN-CNN
(``digits``), trained, converted and evaluated (``run``)."""
