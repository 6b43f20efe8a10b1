"""The one exception type for errors a user can cause."""


class DflowgenError(Exception):
    """A problem with the user's input (path, recipe, checkpoint, data).

    The CLI prints its message on one line and exits with status 2 (``exit_code``);
    library callers catch it like any exception. Raise it with a message that names
    the offending file, key or value and, where possible, what was expected.
    """

    exit_code = 2
