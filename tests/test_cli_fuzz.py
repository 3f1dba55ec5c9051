"""Fuzz the `fam` command line: bad input gives one line on stderr and exit code 2, never a traceback;
good input gets through. Each fuzzed override's outcome is predicted by an oracle written here from
the documented rules (recipe.py's docstrings, FamConfig's F <= L), not by the code under test."""

import math

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import transformer_fam.training.trainer as trainer_module
from transformer_fam.cli import main

junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=12).filter(lambda s: not s.startswith("-"))
pairs = st.lists(st.tuples(st.sampled_from(["max_steps", "seed", "lr", "out_dir", "nonsense_key", "block_size",
                                            "attention_mode", "rsp_prob"]), junk), max_size=3)
# values that are often valid as well as junk, so both outcomes are exercised
values = st.one_of(junk, st.integers(-3, 70).map(str), st.integers(2 ** 32 - 2, 2 ** 32).map(str),
                   st.floats(-2, 2, allow_nan=False).map(repr),
                   st.sampled_from(["true", "no", "null", "~", "[1]", "{a: 1}", "1e3", "0x10", "1_000", "+5",
                                    "1:30", "2001-01-01", "'7'", "nan", ".nan", "inf", "-.inf", "!!float", "!!int x",
                                    "!!timestamp x", "!!bool x", "fam", "bswa", "full", "FAM", " fam", ""]))
KEYS = ["max_steps", "save_every", "seed", "lr", "rsp_prob", "block_size", "attention_mode", "out_dir",
        "nonsense_key"]
BASE = dict(attention_mode="fam", rsp_prob=0.0, fam_length=8)  # what passkey-tiny.yaml sets


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
    return lines[-1]


def _yaml(raw):
    """An override's value as the docs say it is read: YAML, or the raw text where YAML fails
    (a YAML tag that fails to construct, "!!float", raises other errors than YAMLError)."""
    try:
        return yaml.safe_load(raw)
    except Exception:
        return raw


def _as_int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _as_float(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def oracle(overrides: dict) -> tuple[dict, set]:
    """(the recipe values expected for the overridden keys, the keys that make the recipe invalid)."""
    got, bad = {}, set()
    merged = dict(BASE)
    for key, raw in overrides.items():
        value = raw if key in ("out_dir", "attention_mode") else _yaml(raw)  # string keys keep the raw text
        if key in ("max_steps", "save_every", "block_size"):
            value = _as_int(value)
            ok = value is not None and value >= 1
        elif key == "seed":
            value = _as_int(value)
            ok = value is not None and 0 <= value < 2 ** 32  # numpy's seed range (seed_everything)
        elif key in ("lr", "rsp_prob"):
            value = _as_float(value)
            ok = value is not None and math.isfinite(value) and (value > 0 if key == "lr" else 0 <= value <= 1)
        elif key == "attention_mode":
            ok = value in ("full", "bswa", "fam")
        else:  # out_dir takes any text; nonsense_key is no recipe key
            ok = key == "out_dir"
        if ok:
            got[key] = value
        else:
            bad.add(key)
    merged.update(got)
    mode = merged["attention_mode"] if "attention_mode" not in bad else None
    if merged["rsp_prob"] != 0 and mode != "fam" and "rsp_prob" not in bad:
        bad.add("rsp_prob")  # acts on the FAM only
    if mode == "fam" and "block_size" in got and got["block_size"] < merged["fam_length"]:
        bad.add("block_size")  # F <= L (FamConfig), reported as "fam_length=8: must be <= block_size=..."
    return got, bad


@pytest.fixture
def built(monkeypatch):
    """Replace the training loop by the real Trainer's setup (tokenizer, batches, model, optimiser),
    without steps: a valid recipe then exits 0 fast, and the recipe that reached it is kept."""
    seen = []

    def setup_only(recipe, resume=False):
        trainer_module.Trainer(recipe, resume=resume)
        seen.append(recipe)
        return 0

    monkeypatch.setattr(trainer_module, "train", setup_only)
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipe=junk, overrides=pairs)
def test_train_with_unknown_recipe_fails_in_one_line(recipe, overrides, capsys):
    argv = ["train", f"/nonexistent/{recipe}.yaml", *[f"{k}={v}" for k, v in overrides]]
    line = _one_line_error(*_run(argv, capsys))
    assert line.startswith("fam train: error: recipe ") and "/nonexistent/" in line, line
    assert line.endswith("no such file"), line  # the path, not the overrides, is what fails


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=2))
@example(overrides=[("max_steps", "5")])
@example(overrides=[("attention_mode", "bswa"), ("rsp_prob", "0.5")])
@example(overrides=[("attention_mode", "bswa"), ("block_size", "4")])
@example(overrides=[("block_size", "4")])
@example(overrides=[("seed", "-1")])
@example(overrides=[("lr", "1e-4")])
def test_recipe_override_fuzz(overrides, built, capsys):
    """A bundled recipe (valid as it stands) with fuzzed overrides: exit 2 and one line naming an
    offending key exactly when the oracle finds one; otherwise exit 0 with the overrides applied."""
    expect = dict(overrides)  # a repeated key: the last one wins
    got, bad = oracle(expect)
    built.clear()  # one fixture serves every example
    event("invalid" if bad else "valid")
    argv = ["train", "passkey-tiny", *[f"{k}={v}" for k, v in overrides]]
    code, err = _run(argv, capsys)
    if bad:
        line = _one_line_error(code, err)
        assert any(key in line for key in bad), (bad, line)
        assert not built
    else:
        assert code == 0 and "Traceback" not in err and "error" not in err, (overrides, code, err)
        assert len(built) == 1
        recipe = built[0]
        for key, value in got.items():
            assert getattr(recipe, key) == value, (key, getattr(recipe, key), value)


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


# Gaps the fuzz found (fixed in training/recipe.py): each must fail on the key, in one line.
@pytest.mark.parametrize("value", ["!!timestamp x", "!!float", "!!int abc", "!!bool x"])
def test_yaml_tag_override_fails_in_one_line_naming_the_key(value, built, capsys):
    line = _one_line_error(*_run(["train", "passkey-tiny", f"max_steps={value}"], capsys))
    assert "recipe key max_steps=" in line and not built


@pytest.mark.parametrize("override", ["lr=nan", "lr=.inf", "rsp_prob=nan", "seed=-1", f"seed={2 ** 32}"])
def test_non_finite_float_and_out_of_range_seed_fail_naming_the_key(override, built, capsys):
    line = _one_line_error(*_run(["train", "passkey-tiny", override], capsys))
    assert f"recipe key {override.split('=')[0]}=" in line and not built
