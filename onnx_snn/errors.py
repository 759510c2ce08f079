"""The one exception type that the CLI turns into a one-line message."""


class OnnxSnnError(Exception):
    """A problem with the user's input or settings, described in one line."""
