"""Errors that mean the user asked for something wrong: shown as one line, no traceback."""

import argparse


class UsageError(ValueError):
    pass


class OneLineErrorParser(argparse.ArgumentParser):
    # A wrong option is one line on stderr and exit 2, not a usage dump.
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
