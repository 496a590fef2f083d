"""The one exception type users see: it names the bad value and the fix."""


class CompressorError(ValueError):
    """A user-facing error. The message names the offending value and how to fix it.

    It subclasses ValueError so callers that catch bad input generically still catch it.
    """
