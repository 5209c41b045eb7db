"""Errors that mean the user asked for something wrong: shown as one line, no traceback."""


class UsageError(ValueError):
    pass
