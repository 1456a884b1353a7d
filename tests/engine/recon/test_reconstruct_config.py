"""``ReconstructConfig``: defaults from ``engine.recon.defaults``, round trip, refusals that name the key."""

from __future__ import annotations

import sys

import pytest

from engine.errors import ConfigError
from engine.recon import defaults
from engine.recon.reconstruct_config import ReconstructConfig


def test_defaults_come_from_the_one_defaults_module():
    c = ReconstructConfig()
    assert (c.samples, c.guidance, c.steps, c.sampler, c.seed, c.repeat_mode) == (
        defaults.SAMPLES, defaults.GUIDANCE, defaults.STEPS, defaults.SAMPLER, defaults.SEED, defaults.REPEAT_MODE)
    assert c.source == "brain" and c.img2img_strength is None and c.generator is None


def test_round_trip_and_replace():
    c = ReconstructConfig(samples=2, guidance=1.5, steps=7, sampler="dpmpp", seed=9, img2img_strength=0.5,
                          batch_size=16, compile="reduce-overhead", device="cpu")
    assert ReconstructConfig.from_dict(c.to_dict()) == c
    assert c.replace(seed=3).seed == 3 and c.replace(seed=3).steps == 7
    # numbers as YAML or a form may give them
    n = ReconstructConfig.from_dict({"samples": "3", "guidance": 2, "steps": 5.0})
    assert (n.samples, n.guidance, n.steps) == (3, 2.0, 5) and isinstance(n.guidance, float)


@pytest.mark.parametrize("d, key", [({"sampels": 2}, "sampels"), ({"oracle": True}, "oracle")])
def test_unknown_keys_are_refused_by_name(d, key):
    with pytest.raises(ConfigError, match=f"key '{key}': unknown key"):
        ReconstructConfig.from_dict(d)


@pytest.mark.parametrize("kw, match", [
    ({"samples": 0}, "key 'samples': expected a positive integer"),
    ({"samples": True}, "key 'samples': expected an integer"),
    ({"steps": 2.5}, "key 'steps': expected an integer"),
    ({"guidance": "lots"}, "key 'guidance': expected a number"),
    ({"source": "dream"}, "key 'source': expected one of"),
    ({"repeat_mode": "median"}, "key 'repeat_mode': expected one of"),
    ({"batch_size": 0}, "key 'batch_size': expected a positive integer"),
    ({"compile": "fast"}, "key 'compile': expected one of"),
])
def test_bad_values_are_refused_by_name(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        ReconstructConfig(**kw)
    assert e.value.key == next(iter(kw)) if len(kw) == 1 else e.value.key is not None


def test_the_sampler_checks_its_own_settings_when_the_job_starts():
    c = ReconstructConfig(steps=0)  # the sampler's range check is SamplerConfig's, not a second copy here
    with pytest.raises(ConfigError, match="steps"):
        c.sampler_config()
    assert c.generator_config().spec == "demo"
    assert ReconstructConfig(generator="/x/sd15", dtype="fp16").generator_config().spec == "/x/sd15"


def test_importing_it_does_not_import_torch():
    import subprocess

    code = "import sys, engine.recon.reconstruct_config as m; m.ReconstructConfig(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
