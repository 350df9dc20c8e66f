# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""What every command of the project shares: its arguments as flags or as one JSON / YAML file, and how it ends on
bad input (one line that says what to do, not a traceback)."""

import os
import sys

import yaml


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


# ---------------------------------------------------------------------------------------------------- arguments

ARGUMENT_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def is_argument_file(argv: list[str]) -> bool:
    """Whether the command line is one JSON or YAML file holding the arguments instead of flags."""
    return len(argv) == 1 and argv[0].endswith(ARGUMENT_FILE_SUFFIXES)


def read_argument_file(parser, path: str, prog: str) -> tuple:
    """The dataclasses of `parser` (an `HfArgumentParser`) filled from the JSON or YAML file `path`; a ValueError
    naming the file when it cannot be read or parsed, or holds an unknown key, a wrong value or misses a required
    one."""
    parse = parser.parse_json_file if path.endswith(".json") else parser.parse_yaml_file
    try:
        return parse(os.path.abspath(path))
    # TypeError: a required argument is missing from the file.
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        raise ValueError(f"argument file {path}: {e}. Fix the file: it holds one object of {prog}'s flags without "
                         "the dashes, e.g. {\"output_dir\": \"runs/out\"}.") from e


__all__ = ["ARGUMENT_FILE_SUFFIXES", "DEBUG_VARIABLE", "INPUT_ERRORS", "is_argument_file", "read_argument_file",
           "run_command"]
