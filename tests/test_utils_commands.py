"""emovit_utils.commands: an input error ends a command with one line and exit status 1."""

import pytest


def test_run_command_turns_an_input_error_into_one_line_and_exit_status_1(capsys, monkeypatch):
    from emovit_utils.commands import run_command

    def bad_input():
        raise ValueError("--foo 3 is not a valid value; pass 1 or 2.")

    monkeypatch.delenv("EMOVIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_command("tool", bad_input)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("tool: error: --foo 3 is not a valid value") and "Traceback" not in err
    assert run_command("tool", lambda x: x + 1, 1) == 2

    with pytest.raises(RuntimeError):  # a bug is not an input error: its traceback stays
        run_command("tool", lambda: (_ for _ in ()).throw(RuntimeError("bug")))
    monkeypatch.setenv("EMOVIT_DEBUG", "1")
    with pytest.raises(ValueError, match="--foo 3"):
        run_command("tool", bad_input)
