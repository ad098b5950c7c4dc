"""The one exception type a user can cause; the CLI prints it as a single line."""


class SrjaxError(Exception):
    """Bad input or a bad request: the message names the input and what to do."""
