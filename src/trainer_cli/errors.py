"""The one error a user's mistake raises. Imports nothing of the project, so every layer,
the config checks and the trust check included, can raise it."""


class UserError(Exception):
    """A mistake in the user's input: reported as one line, without a traceback."""


# The exit status of a run stopped by a signal with its checkpoint written (EX_TEMPFAIL, "try
# again later"): launchers, sweeps and clusters read it as preempted, not failed.
PREEMPTED_EXIT = 75
