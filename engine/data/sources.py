"""What a user may name as a subject: a file or folder in any format, or the demo alias (``demo``, ``demo:N``).

The alias builds the demo subject on first use, and the demo may be simulated from any subject's stimuli, so the
alias lives here, above both ``formats`` (reading) and ``demo`` (simulating).
"""

from __future__ import annotations

from pathlib import Path

from engine.data.demo.builder import resolve_demo_alias
from engine.data.formats import read_subject
from engine.data.subject import Subject


def open_subject(path: str | Path, format: str | None = None, **options) -> Subject:
    """Open ``path`` as a ``Subject``; ``format`` overrides detection, ``options`` go to the reader.

    ``"demo"`` or ``"demo:N"`` opens the built-in (simulated) demo subject N, creating it on first use.
    """
    return read_subject(resolve_demo_alias(path), format, **options)
