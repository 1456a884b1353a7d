"""OverlayState: catalogue, availability, per-overlay display settings, signals."""

from __future__ import annotations

import numpy as np
import pytest

from neurolens_app.state.overlay_state import OverlayState, default_display


def test_set_select_and_display(qtbot):
    st = OverlayState()
    with qtbot.waitSignal(st.overlays_changed):
        st.set_overlay("a", np.linspace(-1, 1, 50))
    assert st.get("a").display.cmap == "RdBu_r" and st.get("a").display.limits[0] == -st.get("a").display.limits[1]
    st.set_overlay("b", np.linspace(0, 1, 50), cmap="hot", limits=(0, 1), select=True)
    assert st.current == "b"
    with qtbot.waitSignal(st.display_changed):
        st.set_display(limits=(0.2, 0.8), threshold=0.1)
    st.set_current("a")
    st.set_current("b")
    assert st.get("b").display.limits == (0.2, 0.8)  # kept per overlay
    st.set_overlay("b", np.zeros(50))  # new values keep the user's display settings
    assert st.get("b").display.limits == (0.2, 0.8)


def test_unavailable_overlays_cannot_be_selected(qtbot):
    st = OverlayState()
    st.set_unavailable("enc", "no encoding maps in run-1")
    assert not st.get("enc").available and st.get("enc").reason == "no encoding maps in run-1"
    with pytest.raises(ValueError, match="no encoding maps"):
        st.set_current("enc")
    with pytest.raises(KeyError):
        st.set_current("nope")


def test_categorical_values_and_alpha():
    st = OverlayState()
    ov = st.set_overlay("experts", [0, 1, -1, np.nan], kind="categorical", categories=["e0", "e1"],
                        alpha=[0.5, 2.0, 0.1, 0.0])
    assert np.isnan(ov.values[2]) and np.isnan(ov.values[3])
    assert ov.alpha.max() == 1.0
    with pytest.raises(ValueError):
        st.set_overlay("x", [1, 2], kind="vector")


def test_default_display_is_robust():
    d = default_display(np.r_[np.zeros(98), 1000.0, np.nan], "scalar")
    assert d.limits[1] < 1000
