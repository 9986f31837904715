"""The `ai` settings' defaults are aicap's (aicap/config.py defines each once). The settings restate them
as literals because loading them must not import aicap (test_launch_imports); this test keeps the two
from drifting apart (they once disagreed: block_size 8 here, 16 there)."""

from __future__ import annotations

import dataclasses

from aicap.config import AiConfig, SamplingDefaults
from datamgr.config import AiSamplingSettings, AiSettings

SETTING_OF = {"isolate_apps": "isolate_prefix_cache_per_app"}  # aicap name → settings name
NOT_SETTINGS = {
    "model_path",
    "solo_model_path",
    "n_batch",
    "kv_unified",
    "prefix_caching",
    "models",
    "shared_prefixes",
    "max_stop_strings",
    "max_stop_chars",
    "sampling",
    "runner",
    "engine",
}  # fixed or per model


def aicap_defaults() -> dict[str, object]:
    ai = AiConfig()
    out: dict[str, object] = {}
    for part in (ai, ai.runner, ai.engine):
        for f in dataclasses.fields(part):
            if f.name not in NOT_SETTINGS:
                out[SETTING_OF.get(f.name, f.name)] = getattr(part, f.name)
    return out


def test_every_ai_setting_defaults_to_aicaps_value() -> None:
    settings = AiSettings()
    want = aicap_defaults()
    assert want, "nothing compared"
    for name, value in want.items():
        assert getattr(settings, name) == value, name


def test_sampling_settings_default_to_aicaps_sampling_defaults() -> None:
    assert AiSamplingSettings().model_dump() == dataclasses.asdict(SamplingDefaults())
