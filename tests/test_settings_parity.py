"""Every option of every command is a key of its `vitc run` section, refused with the same message.

Generated from the settings dataclasses themselves: for each command whose step the pipeline runs (export,
quantize, verify, eval, bench, build, train = the baseline, compress KIND = the method's section), every field
the command takes as an option must be either accepted by the section, or one the pipeline sets itself
(``FIXED``, refused with the reason) or an old spelling (``ALIASES``). A bad value of each field is refused by
the command's settings (what its Click options feed) and by the YAML with the same message, but for how each
names the option (``--min-iters`` / ``p.yaml: 'bench.min_iters'``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from vitc.backends import BACKENDS, BUILDERS
from vitc.cli.options import collect
from vitc.core.errors import UsageError
from vitc.core.settings import _strip_optional, fields, flag_of
from vitc.methods import METHODS
from vitc.pipeline.config import _SECTIONS, config_from_dict
from vitc.pipeline.sections import ALIASES
from vitc.train.settings import TrainSettings

BASE = {"model": "vit-nano", "data": "digits"}
SOURCE = "p.yaml"


def _command_settings(section_cls: type) -> type:
    """The command's own settings class a section derives from (ExportStage → ExportSettings)."""
    for base in section_cls.__mro__[1:]:
        if dataclasses.is_dataclass(base) and not base.__name__.startswith("_") and base.__module__ != section_cls.__module__:
            return base
    return section_cls


def _cases() -> list[tuple[str, type, type]]:
    """(YAML section, the section's class, the command's settings class)."""
    out = [(key, cls, _command_settings(cls)) for key, cls in _SECTIONS.items()
           if _command_settings(cls) is not cls]
    out.append(("baseline", TrainSettings, TrainSettings))
    out += [(f"build.{name}", BACKENDS[name].build_settings_class(), BACKENDS[name].build_settings_class()) for name in BUILDERS]
    out += [(kind, m.settings, m.settings) for kind, m in METHODS.items()]
    from vitc.pipeline.sections import TuneStage
    from vitc.tune.settings import TuneSettings

    out.append(("tune", TuneStage, TuneSettings))
    return out


CASES = _cases()


def test_every_stage_command_has_a_section() -> None:
    names = {c[0].split(".")[0] for c in CASES}
    assert {"export", "quantize", "verify", "eval", "bench", "build", "baseline", "tune", *METHODS} <= names


def _yaml(section: str, key: str, value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = dict(BASE)
    node = raw
    parts = section.split(".")
    for part in parts:
        node = node.setdefault(part, {})
    node[key] = value
    if parts[0] == "tune":
        node.setdefault("target_speedup", 2.0)
    method = METHODS.get(parts[0])
    if method is not None:
        if method.sweep is not None and key != method.sweep:
            node.setdefault(f"{method.sweep}s", [0.5])
        if method.parent_key is not None and key != method.parent_key:
            node.setdefault(method.parent_key, 0.5)
    return raw


def _yaml_key(section: str, name: str) -> tuple[str, Any]:
    method = METHODS.get(section)
    if method is not None and name == method.sweep:
        return f"{name}s", "list"
    return name, None


def _bad_value(spec: Any, tp: Any) -> Any:
    base, _ = _strip_optional(tp)
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        inner = typing.get_args(base)[0]
        return [_bad_value(spec, inner)]
    if spec.choices is not None:
        return "no-such-choice" if base is str else -12345
    if base in (int, float) and spec.min is not None:
        return spec.min - 1
    if base in (int, float) and spec.max is not None:
        return spec.max + 1
    if base in (int, float):
        return "not-a-number"
    if base is bool:
        return "maybe"
    return None


@pytest.mark.parametrize("section, section_cls, command_cls", CASES, ids=[c[0] for c in CASES])
def test_every_option_is_a_key_of_its_section_refused_alike(section: str, section_cls: type, command_cls: type) -> None:
    fixed = getattr(section_cls, "FIXED", {})
    aliases = {key for (sec, key) in ALIASES if sec == section}
    checked = 0
    for f, spec, tp in fields(command_cls):
        if not spec.cli:
            continue
        key, shape = _yaml_key(section.split(".", maxsplit=1)[0] if section.split(".", maxsplit=1)[0] in METHODS else section, f.name)
        if f.name in aliases:
            continue  # an old spelling: moved to its new key with a note (tests/test_pipeline_config.py)
        if fixed.get(f.name):
            with pytest.raises(UsageError, match=f"'{section}.{f.name}' is set by the pipeline"):
                config_from_dict(_yaml(section, f.name, _default_or_sample(f, tp)), SOURCE)
            continue
        default = _default_or_sample(f, tp)
        if default is not None:  # the key exists: its default is taken (never "unknown key")
            try:
                config_from_dict(_yaml(section, key, [default] if shape == "list" else default), SOURCE)
            except UsageError as e:
                assert "unknown key" not in str(e), (f.name, str(e))
        bad = _bad_value(spec, tp)
        if bad is None:
            continue
        value = [bad] if shape == "list" else bad
        with pytest.raises(UsageError) as yaml_error:
            config_from_dict(_yaml(section, key, value), SOURCE)
        text = ",".join(map(str, bad)) if isinstance(bad, list) else str(bad)
        with pytest.raises(UsageError) as cli_error:
            collect(command_cls, {f.name: text, **_required(command_cls, f.name)})
        flag = flag_of(f.name, spec)
        yaml_message = str(yaml_error.value)
        cli_message = str(cli_error.value).replace(flag, "KEY")
        yaml_key = f"{SOURCE}: '{section}.{key}" + ("[0]'" if shape == "list" or isinstance(bad, list) else "'")
        assert yaml_key in yaml_message, (f.name, yaml_message)
        assert yaml_message.replace(yaml_key, "KEY").split("KEY", 1)[-1] == cli_message.split("KEY", 1)[-1], \
            (f.name, yaml_message, cli_message)
        checked += 1
    assert checked > 0


def _default_or_sample(f: dataclasses.Field, tp: Any) -> Any:
    from vitc.core.settings import default_of

    value = default_of(f)
    return None if value is dataclasses.MISSING else value


def _required(cls: type, but: str) -> dict[str, str]:
    """Text values for the required fields of ``cls`` other than ``but`` (a quantize needs --data, a tune a target)."""
    from vitc.core.settings import default_of

    sample = {str: "digits", float: "2.0", int: "1"}
    return {f.name: sample[_strip_optional(tp)[0]] for f, _, tp in fields(cls)
            if f.name != but and default_of(f) is dataclasses.MISSING}
