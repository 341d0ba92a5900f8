"""Bad input ends a command with one line; anything else keeps its traceback."""

import pytest

from seglab.cli import bad_input_in_one_line


def test_a_value_error_becomes_exit_status_2_and_one_line(capsys, monkeypatch):
    monkeypatch.delenv("SEGLAB_VERBOSE", raising=False)
    with pytest.raises(SystemExit) as ended, bad_input_in_one_line("seglab.x"):
        raise ValueError("data.root='/nowhere' is not a folder")
    assert ended.value.code == 2
    assert capsys.readouterr().err == "seglab.x: data.root='/nowhere' is not a folder\n"


def test_verbose_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("SEGLAB_VERBOSE", "1")
    with pytest.raises(ValueError, match="bad"), bad_input_in_one_line("seglab.x"):
        raise ValueError("bad")


@pytest.mark.parametrize("error", [OSError("disk full"), KeyError("k"), KeyboardInterrupt()])
def test_other_errors_pass_through(error, capsys, monkeypatch):
    monkeypatch.delenv("SEGLAB_VERBOSE", raising=False)
    with pytest.raises(type(error)), bad_input_in_one_line("seglab.x"):
        raise error
    assert capsys.readouterr().err == ""


def test_nothing_happens_without_an_error(capsys):
    with bad_input_in_one_line("seglab.x"):
        pass
    assert capsys.readouterr().err == ""
