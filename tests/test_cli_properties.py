"""Property test (hypothesis, derandomized) of the command line: any sequence of a command's
own flags with any values ends in a clean exit or one `layertap COMMAND: error: ...` line
(argparse's usage before it), with exit code 2; never a traceback. The flags are read from
each command's parser, so a new flag is tried without a change here."""

from __future__ import annotations

import argparse
import importlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layertap.cli import COMMANDS, main

# `demo` runs a whole extraction on its built-in default: nothing here to fuzz.
FUZZED = sorted(set(COMMANDS) - {"demo"})
VALUES = [
    "",
    "x",
    "0",
    "-1",
    "3",
    "1,3",
    "3-",
    "1-2,5",
    "nan",
    "1e9",
    "all",
    "off",
    "int8",
    "missing/dir",
    "hf://org/none",
    "hf://a/b@",
    "../up",
    "a,,b",
    "{}",
    "[1]",
    "Shape(Minimal)",
    "Bogus(",
    "--",
]


def _flags(command: str) -> list[argparse.Action]:
    parser = argparse.ArgumentParser(prog=f"layertap {command}")
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(FUZZED))
    argv = [command]
    for _ in range(draw(st.integers(0, 5))):
        flags = _flags(command)
        if not flags or draw(st.integers(0, 5)) == 0:
            argv.append(draw(st.sampled_from(VALUES)))  # a positional
            continue
        action = draw(st.sampled_from(flags))
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            choices = list(action.choices or [])
            argv.append(draw(st.sampled_from(choices + VALUES) if choices else st.sampled_from(VALUES)))
    return argv


@settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(argv=command_lines())
def test_any_command_line_ends_cleanly_or_in_one_error_line(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)  # relative paths land here; nothing named in VALUES exists
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an hf:// value never reaches the network
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    if code not in (0, None):
        last = err.strip().splitlines()[-1]
        assert code == 2 and last.startswith(f"layertap {argv[0]}: error: "), (argv, err)
