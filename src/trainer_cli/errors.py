"""The one error a user's mistake raises. Imports nothing of the project, so every layer,
the config checks and the trust check included, can raise it."""


class UserError(Exception):
    """A mistake in the user's input: reported as one line, without a traceback."""
