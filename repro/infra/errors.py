"""The two kinds of error a command reports in one line instead of a traceback.

A :class:`UserError` is bad input (a file, a field, a flag, a name the user gave): the
command line prints it and exits 2. A :class:`RunFailure` is a run that could not finish for
a reason the user must see (non-finite samples, a failed rank, a failed write, statistics
with nothing to stand on): exit 1. Every other exception is a bug and keeps its traceback.
Error classes of the packages derive from one of these (and keep their builtin base, so
``except ValueError`` in a caller still holds)."""


class UserError(Exception):
    """Bad input, named in one line; exit 2."""


class RunFailure(Exception):
    """A run that could not finish, said in one line; exit 1."""
