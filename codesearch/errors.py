"""Errors caused by input a user can fix. The CLI prints them as one clear message, without a traceback."""


class UserError(Exception):
    """Bad input: a file, line, key or value the user can correct."""


class DataError(UserError):
    """A corpus file or directory that cannot be read as any supported form."""


class RunsFailed(Exception):
    """The command did its work, but some of the runs it launched failed (the message says which); exit status 1."""
