"""Per-preset detector settings: JSON in UNSAMV2_CVAT_PRESETS or a presets file."""

from __future__ import annotations

import json

import pytest

from ml_backend.cvat.presets import DetectorSettings, Preset, PresetError, parse_presets
from ml_backend.label_studio.project_settings import ProjectSettings
from ml_backend.settings import Settings, SettingsError

PRESETS = [
    {"name": "fine", "granularity": 0.2, "points_per_side": 8, "granularities": [0.2, 0.4]},
    {"name": "whole", "granularity": 1.0, "scope": "ls:3", "stability_score_thresh": 0.95},
]


def test_detector_defaults_are_label_studios() -> None:
    ls, preset = ProjectSettings(), Preset("part", 0.5)
    assert (
        preset.detector.points_per_side,
        preset.detector.pred_iou_thresh,
        preset.detector.stability_score_thresh,
    ) == (ls.points_per_side, ls.pred_iou_thresh, ls.stability_score_thresh)
    assert preset.detector_granularities == (0.5,)


def test_json_presets_set_each_detector() -> None:
    fine, whole = parse_presets(json.dumps(PRESETS))
    assert fine.detector == DetectorSettings(points_per_side=8, granularities=(0.2, 0.4))
    assert fine.detector_granularities == (0.2, 0.4)
    assert whole.scope == "ls:3" and whole.detector.stability_score_thresh == 0.95
    assert whole.detector.points_per_side == ProjectSettings().points_per_side
    # the compact form still works, with the default detector
    (part,) = parse_presets("part:0.5")
    assert part.detector == DetectorSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "not valid JSON"),
        ('{"name": "a"}', "must be a list"),
        ('[{"name": "a"}]', "granularity: Field required"),
        ('[{"name": "a", "granularity": 0.5, "grid": 4}]', "grid: Extra inputs"),
        ('[{"name": "a", "granularity": 0.5, "points_per_side": 33}]', r"\[1, 32\]"),
        ('[{"name": "a", "granularity": 0.5, "points_per_side": "8"}]', "valid integer"),
        ('[{"name": "a", "granularity": 0.5, "pred_iou_thresh": 1.5}]', r"in \[0, 1\]"),
        ('[{"name": "a", "granularity": 0.5, "granularities": [0.05]}]', "granularities"),
        ('[{"name": "a", "granularity": 0.5}, {"name": "a", "granularity": 1}]', "repeated: a"),
        ("[]", "at least one"),
    ],
)
def test_bad_json_presets_are_refused(text, message) -> None:
    with pytest.raises(PresetError, match=message):
        parse_presets(text)


def test_settings_read_presets_from_json_or_a_file(tmp_path) -> None:
    env = {"UNSAMV2_CVAT_PRESETS": json.dumps(PRESETS)}
    assert [p.name for p in Settings.from_env(env).cvat_presets] == ["fine", "whole"]
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(PRESETS[:1]))
    (fine,) = Settings.from_env({"UNSAMV2_CVAT_PRESETS_FILE": str(path)}).cvat_presets
    assert fine.detector.points_per_side == 8
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({**env, "UNSAMV2_CVAT_PRESETS_FILE": str(path)})
    with pytest.raises(SettingsError, match="UNSAMV2_CVAT_PRESETS_FILE: cannot read"):
        Settings.from_env({"UNSAMV2_CVAT_PRESETS_FILE": str(tmp_path / "missing.json")})
    path.write_text('[{"name": "x", "granularity": 7}]')
    with pytest.raises(SettingsError, match="UNSAMV2_CVAT_PRESETS_FILE: preset 'x'"):
        Settings.from_env({"UNSAMV2_CVAT_PRESETS_FILE": str(path)})
