# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""How every command of the project ends on bad input: one line that says what to do, not a traceback."""

import os
import sys


# Errors that mean the user's input is wrong (a flag's value, a file's content, a missing path): the command prints
# their message, which says what to do, instead of a traceback. Anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, OSError)
DEBUG_VARIABLE = "EMOVIT_DEBUG"


def run_command(prog: str, main, *args):
    """Runs a command's `main(*args)` and returns its result. An input error (`INPUT_ERRORS`) ends the process with
    `prog: error: <message>` on stderr and exit status 1, without a traceback; with EMOVIT_DEBUG=1 in the environment
    it is raised as it is, traceback and all."""
    try:
        return main(*args)
    except INPUT_ERRORS as e:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {e}\n(run with {DEBUG_VARIABLE}=1 to see where it was raised)", file=sys.stderr)
        sys.exit(1)


__all__ = ["DEBUG_VARIABLE", "INPUT_ERRORS", "run_command"]
