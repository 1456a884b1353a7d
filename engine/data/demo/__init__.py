"""The built-in demo subject: a SIMULATED fMRI subject with known ground truth (see ``docs/demo-subject.md``).

- ``render_stimuli(n, seed)``: the procedural object images (``stimuli``).
- ``create_demo_subject(path, seed=0, subject=1)`` / ``create_demo_job(...)``: simulate and write a subject.
- ``default_demo_path(subject)`` / ``ensure_demo_subject(subject)``: the cached demo subject.
"""

from engine.data.demo.builder import (create_demo_job, create_demo_subject, default_demo_path, demo_name,
                                      ensure_demo_subject)
from engine.data.demo.cortex import ROI_NAMES
from engine.data.demo.simulate import DemoConfig
from engine.data.demo.stimuli import CATEGORIES, StimulusSet, render_stimuli

__all__ = ["CATEGORIES", "ROI_NAMES", "DemoConfig", "StimulusSet", "create_demo_job", "create_demo_subject",
           "default_demo_path", "demo_name", "ensure_demo_subject", "render_stimuli"]
