"""The errors a user sees as one line (jobs turn them into an exit code: 2 for bad input, 1 for a failed sweep)."""


class ConfigError(ValueError):
    """Bad user input, found before expensive work. The message is one line that names the culprit."""


class SweepError(RuntimeError):
    """The sweep cannot finish (e.g. an actor keeps dying). One line; what is stored so far stays valid."""


class Interrupted(SweepError):
    """Ctrl-C: what was stored stays; the message says how much and how to resume."""
