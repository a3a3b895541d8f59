"""The one base of every error xnorflow raises on purpose for bad input.

Every folder's errors (SpecError, CompileError, DatasetError, BoardError, ...) derive from
:class:`XnorflowError`; the command line turns any of them into one line on stderr and exit code 2,
and anything else is a bug that shows its traceback. This module imports nothing, so every folder
may import it without bending the one-way arrows of docs/DESIGN.md section 1.
"""


class XnorflowError(ValueError):
    """Bad input a user can fix; the message is one line naming the cause and the fix.

    A ValueError, so code that guarded against bad values before this base existed still catches it.
    """


__all__ = ["XnorflowError"]
