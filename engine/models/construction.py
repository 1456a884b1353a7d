"""One process-wide lock around building torch modules and loading pretrained ones.

Why: the low-memory loading of diffusers and transformers (``from_pretrained``) creates modules under accelerate's
``init_empty_weights``, which patches ``nn.Module.register_parameter`` for the whole process while it runs. A module
built in another thread meanwhile (the GUI analyses a run in a pool thread while a worker loads the generator) gets
its parameters on the meta device, and loading weights into it is a silent no-op. Every ``from_pretrained`` of the
engine and every brain-encoder construction hold this lock, so the two never overlap.
"""

from __future__ import annotations

import threading

MODEL_BUILD_LOCK = threading.RLock()
