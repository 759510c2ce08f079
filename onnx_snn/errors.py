"""The one exception type that the CLI turns into a one-line message."""


class OnnxSnnError(Exception):
    """A problem with the user's input or settings, described in one line."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a library's own errors can be long), or the
    error's type when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
