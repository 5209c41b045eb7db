"""Where the commands' log records go: always to a log file; to the terminal only with
--verbose, apart from our own warnings, shown as one line each.

Libraries log tracebacks for failures a command reports itself in one line (the
Cassandra driver logs every refused connection with its stack), so their records stay in
the file unless asked for. Beam calls logging.basicConfig() when a pipeline is built;
handlers on the root logger make that a no-op. The handlers stay for the life of the
process: the driver still logs while the interpreter shuts down."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

OWN_LOGGER = "fraud_detection"
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 5_000_000
BACKUPS = 3
_MARK = "_fraud_detection_handler"


class _OwnOneLine(logging.Filter):
    """Our own warnings and errors, not the libraries'; a record may opt out with
    extra={"terminal": False} (a traceback the command also reports in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + ".")
        return own and getattr(record, "terminal", True)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (pytest swaps it per test)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _OneLineFormatter(logging.Formatter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.prefix}{record.levelname.lower()}: {one_line(record.getMessage())}"


def one_line(text: str) -> str:
    """The first non-empty line of text, marked when more followed."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] + (" (...)" if len(lines) > 1 else "")


def setup(log_file: Path | None, level: str = "INFO", verbose: bool = False,
          prefix: str = "") -> Path | None:
    """Routes every log record to log_file (rotated at 5 MB), and to stderr in full with
    verbose, else only our own WARNING and above as `<prefix>warning: ...`. Returns the
    log file, or None when it cannot be opened (then nothing is written there)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Ours from an earlier call (main() run twice in one process), and a bare
        # stderr handler from an early logging.basicConfig(); a test runner's stay.
        if getattr(handler, _MARK, False) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    opened: Path | None = None
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        except OSError:
            file_handler = None
        if file_handler is not None:
            file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
            setattr(file_handler, _MARK, True)
            root.addHandler(file_handler)
            opened = log_file
    console = _Stderr()
    setattr(console, _MARK, True)
    if verbose:
        console.setFormatter(logging.Formatter(FILE_FORMAT))
    else:
        console.setLevel(logging.WARNING)
        console.addFilter(_OwnOneLine())
        console.setFormatter(_OneLineFormatter(prefix))
    root.addHandler(console)
    logging.captureWarnings(True)  # Python warnings from libraries go the same way
    return opened
