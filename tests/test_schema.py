"""The configuration schema, driven by itself: every key, every bad value class, at the command line.

For every key of ``jacinv.schema``: a value the schema refuses (wrong type, out of range, not an
allowed value) and a setting the other keys make meaningless both stop ``train.py`` with exit status
2 and one ``error:`` line naming the key, before any data is read.  The values come from hypothesis,
so the cases are not a list somebody wrote.
"""
from __future__ import annotations

import math
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jacinv import schema, yaml12
from jacinv.cli import train_main
from jacinv.config import load_config, parse_override
from jacinv.schema import FIELDS, USED_WHEN, ConfigError, check_config, defaults

KEYS = sorted(FIELDS)

scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(alphabet="abcxyz019.-+e_/ ", max_size=8), st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.sampled_from("abc"), st.integers(-3, 3), max_size=2))


def _as_override(key: str, value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _where_used(key: str) -> list[str]:
    """Overrides of the controlling keys under which ``key`` has an effect ([] when always), with the
    keys those settings require (``REQUIRED_WHEN``) given a value."""
    return _with_required({k: v[0] for k, v in USED_WHEN[key][0].items()} if key in USED_WHEN else {}, key)


def _with_required(setting: dict, key: str) -> list[str]:
    """``setting`` as overrides, with the keys it requires (``REQUIRED_WHEN``, other than ``key``) given a value."""
    setting = dict(setting)
    config = defaults()
    for dotted, value in setting.items():
        section, name = dotted.split(".")
        config[section][name] = value
    for required, condition in schema.REQUIRED_WHEN.items():
        if required != key and schema._met(condition, config):
            setting[required] = "somewhere"
    return [f"{k}={v}" for k, v in setting.items()]


def _refused(override: str) -> bool:
    """Whether the schema refuses this override (on the default configuration, with the settings under
    which its key has an effect: ``_where_used``)."""
    try:
        load_config(None, [*_where_used(override.split("=", 1)[0]), override])
    except ConfigError:
        return True
    return False


def _cli_error(argv: list[str], tmp_path, capsys) -> str:
    code = train_main([*argv, "--run-dir", str(tmp_path / "run"), "--no-progress", "--stop-after", "1"])  # bounded if it trains
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (tmp_path / "run").exists()
    return lines[0]


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=scalars)
def test_every_refused_value_is_one_line_naming_the_key(key, value, tmp_path, capsys):
    override = _as_override(key, value)
    if not _refused(override):
        return  # a valid value: training would start; the schema's acceptance is checked below
    line = _cli_error([*_where_used(key), override], tmp_path, capsys)
    assert f"'{key}'" in line or f"'{key.split('.')[0]}'" in line, line


def _alternatives(key):
    return schema._alternatives(FIELDS[key].annotation, FIELDS[key].metadata)


def _bounds(key) -> list[tuple[type, str, float]]:
    """(base type, 'ge'/'gt', bound) of each numeric alternative of ``key``."""
    out = []
    for kind, extra in _alternatives(key):
        for m in extra:
            for attr in ("ge", "gt"):
                if getattr(m, attr, None) is not None and kind in (int, float):
                    out.append((kind, attr, getattr(m, attr)))
    return out


@pytest.mark.parametrize("key", [k for k in KEYS if _bounds(k)])
def test_values_just_outside_the_range_are_refused_and_the_bound_accepted(key, tmp_path, capsys):
    for kind, attr, bound in _bounds(key):
        outside = (bound - 1 if kind is int else bound - 1e-9) if attr == "ge" else bound
        line = _cli_error([*_where_used(key), f"{key}={outside!r}"], tmp_path, capsys)
        assert f"config key '{key}' must be" in line and repr(outside) in line, line
        inside = bound if attr == "ge" else (bound + 1 if kind is int else bound * 1.5 + 1e-3)
        assert not _refused(f"{key}={inside!r}")


@pytest.mark.parametrize("key", [k for k in KEYS if any(k2 is int for k2, _ in _alternatives(k))])
def test_int_keys_refuse_floats_and_booleans(key, tmp_path, capsys):
    for bad in ("3.0", "true"):
        assert f"config key '{key}'" in _cli_error([f"{key}={bad}"], tmp_path, capsys)


@pytest.mark.parametrize("key", [k for k in KEYS if any(k2 == "literal" for k2, _ in _alternatives(k))])
def test_choice_keys_accept_each_choice_and_refuse_others(key, tmp_path, capsys):
    choices = next(extra for kind, extra in _alternatives(key) if kind == "literal")
    line = _cli_error([f"{key}=not_a_choice"], tmp_path, capsys)
    assert "'not_a_choice'" in line and str(list(choices)[0]) in line, line


def _a_valid_other_value(key):
    """A value the schema accepts for ``key`` that differs from its default."""
    default = schema.get(defaults(), key)
    for kind, extra in _alternatives(key):
        if kind == "literal":
            return next(v for v in extra if v != default)
        if kind in (int, float):
            return (default if isinstance(default, (int, float)) else 0) + 2
        if kind is str:
            return "somewhere"
        if typing.get_origin(kind) is dict:
            return {"k": 1}
        if typing.get_origin(kind) is list:   # a list of choices: the first choice alone
            return [typing.get_args(typing.get_args(kind)[0])[0]]
    raise AssertionError(key)


@pytest.mark.parametrize("key", sorted(USED_WHEN))
def test_a_key_the_other_settings_ignore_is_refused(key, tmp_path, capsys):
    contexts = list(schema.contexts_where_unused(key))
    assert contexts, f"{key}: no setting makes it unused; drop it from USED_WHEN"
    value = _a_valid_other_value(key)
    tried = 0
    for context in contexts:
        setting = _with_required(context, key)
        try:
            load_config(None, setting)  # the context alone must be a valid configuration
        except ConfigError:
            continue
        tried += 1
        line = _cli_error([*setting, _as_override(key, value)], tmp_path, capsys)
        assert f"config key '{key}'" in line and "has no effect" in line, line
        assert not _refused(_as_override(key, value))  # the same value where the key is used is accepted
        break
    assert tried, f"{key}: no valid context leaves it unused"


@pytest.mark.parametrize("key", sorted(schema.REQUIRED_WHEN))
def test_a_key_the_other_settings_need_may_not_be_null(key, tmp_path, capsys):
    for alternative in schema.REQUIRED_WHEN[key]:
        setting = [f"{k}={'null' if v[0] is None else v[0]}" for k, v in alternative.items()]
        line = _cli_error([*setting, f"{key}=null"], tmp_path, capsys)
        assert f"config key '{key}' is null, but it is needed when" in line, line


def test_keys_left_at_their_defaults_are_not_refused_when_unused():
    """A copy of a saved config.yaml sets every key; those at their defaults must not be errors."""
    saved = defaults()
    saved["noise"]["kind"] = "none"
    check_config(saved, explicit=schema.FIELDS)


def test_every_key_has_a_doc_line():
    assert set(FIELDS) == set(schema.DOCS)


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("5e-4", 0.0005), ("2E3", 2000.0), (".5", 0.5), ("017", 17), ("0x1f", 31), ("-3", -3),
    ("yes", "yes"), ("on", "on"), ("true", True), ("False", False), ("null", None), ("1:20", "1:20"),
    (".inf", math.inf)])
def test_numbers_and_booleans_read_as_yaml_1_2(text, value):
    assert parse_override(f"a={text}")["a"] == value
    assert yaml12.load(f"a: {text}")["a"] == value


def test_numbers_as_people_write_them_reach_the_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {lr: 5e-4}\nregularizer: {lambda_ja: 1e-2}\n")
    assert load_config(config, ["train.lr=1e-3"])["train"]["lr"] == 1e-3
    assert load_config(config)["regularizer"]["lambda_ja"] == 0.01


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: 0.001\n  epochs: 3\n  lr: 0.01\n")
    line = _cli_error(["--config", str(config)], tmp_path, capsys)
    assert "key 'lr' appears twice (first at line 2) at line 4" in line, line
