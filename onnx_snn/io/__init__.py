"""Files in and out: models (``models``), data readers (``data``), outputs committed
together (``outputs``), and what a converted model's metadata says (``metadata``)."""
