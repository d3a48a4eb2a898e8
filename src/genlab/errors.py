"""The one exception type that reaches users as a clear message.

The CLI prints a ``GenlabError`` as a single line on stderr and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class GenlabError(Exception):
    """Bad input from the user: the message says what is wrong and what to do."""


class TrainingDiverged(Exception):
    """A loss became NaN or infinite; the run keeps its last good checkpoint."""
