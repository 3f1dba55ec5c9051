"""Fuzz the `fam` command line: bad input gives one line on stderr and exit code 2, never a traceback."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_fam.cli import main

junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=12).filter(lambda s: not s.startswith("-"))
pairs = st.lists(st.tuples(st.sampled_from(["max_steps", "seed", "lr", "out_dir", "nonsense_key", "block_size",
                                            "attention_mode", "rsp_prob"]), junk), max_size=3)


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    return code, err


def _one_line_error(code, err):
    assert code == 2, (code, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and "Traceback" not in err
    assert lines[-1].startswith("fam") or "error" in lines[-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipe=junk, overrides=pairs)
def test_train_with_unknown_recipe_fails_in_one_line(recipe, overrides, capsys):
    argv = ["train", f"/nonexistent/{recipe}.yaml", *[f"{k}={v}" for k, v in overrides]]
    _one_line_error(*_run(argv, capsys))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["max_steps", "seed", "lr", "nonsense_key", "block_size", "attention_mode",
                            "save_every", "rsp_prob"]), value=junk)
def test_recipe_override_fuzz(key, value, capsys):
    # a bundled recipe with a fuzzed override: an unknown key or a value of the wrong type or range is one
    # line; max_steps=-1 (applied last, itself invalid) stops a valid override before any training
    argv = ["train", "passkey-tiny", f"{key}={value}", "max_steps=-1"]
    _one_line_error(*_run(argv, capsys))


@pytest.mark.parametrize("argv", [
    ["convert", "/nonexistent/model", "/tmp/out"],
    ["generate", "--model", "/nonexistent", "--prompt-file", "/nonexistent.txt"],
    ["eval", "passkey", "--model", "/nonexistent"],
    ["train", "passkey-tiny", "no_such_key=1"],
    ["train", "passkey-tiny", "max_steps=abc"],
    ["nosuchcommand"],
])
def test_bad_invocations(argv, capsys):
    _one_line_error(*_run(argv, capsys))
