"""The one error type for user mistakes (bad config, bad data, bad matrix).

The CLI prints a ``BnlabError`` as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class BnlabError(ValueError):
    """A user error: invalid input at the library's boundary, reported as one clear line."""
