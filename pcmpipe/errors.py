"""The one exception type for errors a user can cause.

The CLI turns a `UserError` into one red line and exit code 2; anything else is a bug and keeps its
traceback. Raise it for bad flags, missing or corrupt inputs, mismatched caches, diverging training.
"""


class UserError(Exception):
    """An error caused by input the user controls (flags, files, caches). Message: one line, actionable."""
