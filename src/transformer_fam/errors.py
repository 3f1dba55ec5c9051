"""The one exception type the command line turns into a one-line message."""


class UserError(Exception):
    """An error caused by input or options; ``fam`` prints its message as one line and exits 2."""
