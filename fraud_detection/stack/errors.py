class StackError(RuntimeError):
    """A service could not be fetched, started or stopped; the message is one line."""
