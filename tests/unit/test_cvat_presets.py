from __future__ import annotations

import json

import pytest

from ml_backend.cvat.presets import (
    DEFAULT_PRESETS,
    CvatFunction,
    Preset,
    PresetError,
    catalog,
    function_annotations,
    parse_presets,
)
from ml_backend.settings import Settings, SettingsError


def test_default_presets_are_fine_part_whole() -> None:
    assert [(p.name, p.granularity) for p in DEFAULT_PRESETS] == [
        ("fine", 0.2),
        ("part", 0.5),
        ("whole", 1.0),
    ]
    assert parse_presets("fine:0.2,part:0.5,whole:1.0") == DEFAULT_PRESETS
    assert parse_presets(" a:0.1 , b-2:1 ,") == (Preset("a", 0.1), Preset("b-2", 1.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one"),
        ("fine", "name:granularity"),
        ("fine:x", "not a number"),
        ("fine:1.5", "granularity must lie in"),
        ("fine:nan", "finite"),
        ("Fine:0.2", "lower-case"),
        ("-fine:0.2", "lower-case"),
        ("a_b:0.2", "lower-case"),
        ("fine:0.2,fine:0.3", "repeated: fine"),
    ],
)
def test_bad_presets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        parse_presets(text)


def test_settings_read_and_validate_the_presets() -> None:
    assert Settings.from_env({}).cvat_presets == DEFAULT_PRESETS
    settings = Settings.from_env({"UNSAMV2_CVAT_PRESETS": "tiny-parts:0.1,objects:0.8"})
    assert settings.cvat_presets == (Preset("tiny-parts", 0.1), Preset("objects", 0.8))
    with pytest.raises(SettingsError, match="UNSAMV2_CVAT_PRESETS"):
        Settings.from_env({"UNSAMV2_CVAT_PRESETS": "fine:2"})


def test_catalog_has_one_interactor_and_one_detector_per_preset() -> None:
    functions = catalog(DEFAULT_PRESETS)
    assert list(functions) == [
        "unsamv2-interactor-fine",
        "unsamv2-interactor-part",
        "unsamv2-interactor-whole",
        "unsamv2-detector-fine",
        "unsamv2-detector-part",
        "unsamv2-detector-whole",
        "unsamv2-tracker-fine",
        "unsamv2-tracker-part",
        "unsamv2-tracker-whole",
    ]
    assert functions["unsamv2-detector-whole"].granularity == 1.0
    assert functions["unsamv2-tracker-part"].kind == "tracker"
    assert "granularity 0.2" in functions["unsamv2-interactor-fine"].description
    with pytest.raises(PresetError, match="repeated"):
        catalog([Preset("a", 0.2), Preset("a", 0.4)])


def test_annotations_are_strings_without_false_flags() -> None:
    interactor = function_annotations(CvatFunction("interactor", Preset("fine", 0.2)))
    detector = function_annotations(CvatFunction("detector", Preset("fine", 0.2)))
    for values in (interactor.values(), detector.values()):
        assert all(isinstance(v, str) for v in values)
        assert "false" not in {v.lower() for v in values}
    assert interactor["type"] == "interactor" and int(interactor["version"]) >= 2
    assert (interactor["min_pos_points"], interactor["min_neg_points"]) == ("0", "0")
    assert interactor["startswith_box_optional"] == "true" and "startswith_box" not in interactor
    assert "0.2" in interactor["name"] and "spec" not in interactor
    assert json.loads(detector["spec"]) == [{"id": 0, "name": "object", "type": "mask"}]
