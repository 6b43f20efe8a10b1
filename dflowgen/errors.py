"""The one exception type for errors a user can cause, and how its messages name settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class DflowgenError(Exception):
    """A problem with the user's input (path, recipe, checkpoint, data).

    The CLI prints its message on one line and exits with status 2 (``exit_code``);
    library callers catch it like any exception. Raise it with a message that names
    the offending file, key or value and, where possible, what was expected.
    """

    exit_code = 2


_COMMAND_LINE: ContextVar[bool] = ContextVar("command_line", default=False)


def option(name: str, value: object = None, *, flag: str = "") -> str:
    """How a message names the setting ``name`` (a keyword argument such as ``num_samples``) to its reader.

    Under the command line it is the flag (``--num-samples 3``; ``flag`` when the flag is spelled
    otherwise); from Python, the argument (``num_samples=3``). A bare switch (``value=True``) is
    ``--overwrite`` or ``overwrite=True``.
    """
    if on_command_line():
        spelled = flag or "--" + name.replace("_", "-")
        return spelled if value is None or value is True else f"{spelled} {value}"
    return name if value is None else f"{name}={value!r}"


@contextmanager
def command_line_names() -> Iterator[None]:
    """Within this block, :func:`option` names settings by their command-line flags (the CLI's own errors)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    """Whether messages are being written for the command line (inside :func:`command_line_names`)."""
    return _COMMAND_LINE.get()
