"""The errors a user sees as one line (jobs turn them into an exit code: 2 for bad input, 1 for a failed sweep)."""


def first_line(e: BaseException) -> str:
    """What to quote of another library's error: its first line (a pickle refusal or a Ray error runs to dozens)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def cause(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e)}"


class ConfigError(ValueError):
    """Bad user input, found before expensive work. The message is one line that names the culprit."""


class SweepError(RuntimeError):
    """The sweep cannot finish (e.g. an actor keeps dying). One line; what is stored so far stays valid."""


class Interrupted(SweepError):
    """Ctrl-C: what was stored stays; the message says how much and how to resume."""
