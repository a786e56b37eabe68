"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class RobustdeqError(Exception):
    """A user-facing error: bad input, missing data, invalid manifest or entry."""
