"""Small Qt state objects, one concept each, with a signal per changing field. Panels subscribe; none owns state."""

from neurolens_app.state.overlay_state import DisplaySettings, Overlay, OverlayState
from neurolens_app.state.run_state import RunState
from neurolens_app.state.settings import AppSettings
from neurolens_app.state.subject_state import SubjectState

__all__ = ["SubjectState", "RunState", "OverlayState", "Overlay", "DisplaySettings", "AppSettings"]
