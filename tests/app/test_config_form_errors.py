"""The training form marks the field a ``ConfigError`` names (red border, the error as tooltip) and clears it when
the values make a valid config again."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.train.presets import get_preset
from neurolens_app.widgets.config_form import ERROR_COLOR, TrainConfigForm


@pytest.fixture
def form(qtbot):
    form = TrainConfigForm()
    qtbot.addWidget(form)
    return form


def _marked(w) -> bool:
    return ERROR_COLOR in w.styleSheet()


def test_an_invalid_value_marks_its_field_and_a_fix_clears_it(form):
    form.set_config(get_preset("pixel-ridge"))
    own_tip = form.params.toolTip()
    form.pixel_basis.setCurrentText("pca")
    form.params.setText("{rescale: true}")  # the engine refuses rescaling with a PCA basis
    with pytest.raises(ConfigError) as info:
        form.config()
    assert info.value.key == "model.params.rescale"
    assert _marked(form.params) and form.params.toolTip() == str(info.value)
    assert not any(_marked(w) for w in (form.lr, form.kind, form.pixel_basis, form.embedder))

    form.params.setText("{rescale: [")  # another error on the same field keeps the field's own tooltip for later
    with pytest.raises(ConfigError, match="not valid YAML"):
        form.config()
    assert _marked(form.params) and "not valid YAML" in form.params.toolTip()

    form.params.setText("")
    assert form.config().data.pixel_basis == "pca"
    assert not _marked(form.params) and form.params.styleSheet() == "" and form.params.toolTip() == own_tip


def test_ridge_keys_are_checked_and_the_mark_moves(form):
    form.set_config(get_preset("demo-ridge"))
    form.params.setText("{hidden: 3}")
    with pytest.raises(ConfigError) as info:
        form.config()
    assert info.value.key == "model.params" and _marked(form.params)
    form.kind.setCurrentText("mlp")  # an MLP has a hidden width: valid, nothing marked
    assert form.config().model.params == {"hidden": 3} and not _marked(form.params)


def test_every_field_the_form_shows_is_found_by_its_key(form):
    form.set_config(get_preset("demo-moe"))
    assert form.widget_for_key("optim.lr") is form.lr
    assert form.widget_for_key("model.params.n_experts") is form.params
    assert form.widget_for_key("loss.mse") is form.loss_weights["mse"]
    assert form.widget_for_key("data.pca_components") is form.pca_components
    assert form.widget_for_key("optim.warmup") is None and form.widget_for_key(None) is None
    err = ConfigError(key="optim.lr", expected="a number > 0", found=0.0, owner="TrainConfig")
    assert form.mark_error(err) is form.lr and _marked(form.lr) and "optim.lr" in form.lr.toolTip()
    assert form.mark_error(ConfigError(key="optim.warmup", expected="x", found=2)) is None
    assert not _marked(form.lr)  # an error on a field the form does not show clears the old mark
