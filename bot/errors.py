"""Errors a user can cause or fix. The router turns any `UserError` into a one-line reply."""


class UserError(Exception):
    """Something the user can fix; `str(err)` is the whole message they see."""


class CommandError(UserError):
    """Unknown command, bad option, missing argument."""


class ModelUnavailable(UserError):
    """The model server cannot be reached or does not have the model."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached; fatal at start, retried later at run time."""
