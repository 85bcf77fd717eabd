"""Errors a user can cause (bad configuration, data or files): the command line reports them as one
``error:`` line and exit status 2; any other exception is a bug and keeps its traceback."""


class UserError(Exception):
    """Base of every error caused by the user's input; the message names the key or file and the value."""
