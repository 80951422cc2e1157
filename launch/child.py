"""``python -m launch.child CMD...``: exec CMD so that it is killed when the launcher dies.

The launcher starts every local process through this trampoline instead of a ``preexec_fn`` hook
(unsafe in a multi-threaded parent): the parent-death signal set here survives ``exec``, so no child
outlives a launcher that was itself killed with SIGKILL.
"""

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m launch.child COMMAND [ARGS...]")
    # Off Linux there is no prctl: the launcher's own signal handling still cleans up.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the guard was set
        sys.exit(1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as err:
        sys.exit(f"cannot start {sys.argv[1]!r}: {err}")


if __name__ == "__main__":
    main()
