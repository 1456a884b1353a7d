"""Training panel parts: the config form, the runs list, comparing curves, and asking before quitting while a job
runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox

from engine.errors import ConfigError
from engine.events import Metric, Progress
from engine.train.config import TrainConfig
from engine.train.presets import get_preset
from engine.train.run import Run
from neurolens_app.widgets.config_form import TrainConfigForm
from neurolens_app.widgets.curves import CurvesWidget, metrics_from_events
from neurolens_app.widgets.runs_list import list_runs


def test_form_round_trips_a_preset_and_applies_edits(qtbot):
    form = TrainConfigForm()
    qtbot.addWidget(form)
    preset = get_preset("demo-moe")
    form.set_config(preset)
    same = form.config()
    assert same.model == preset.model and same.data == preset.data and same.optim == preset.optim
    assert same.loss_config() == preset.loss_config()  # the form writes every weight, with the same values
    assert same.pretrain == preset.pretrain and same.eval_every == preset.eval_every  # fields it does not show

    form.epochs.setValue(7)
    form.lr.setValue(0.002)
    form.precision.setCurrentText("bf16")
    form.params.setText("{hidden: 64, n_experts: [2, 4, 8]}")
    form.loss_weights["mse"].setValue(0.25)
    cfg = form.config(device="cuda:1")
    assert (cfg.epochs, cfg.optim.lr, cfg.precision, cfg.device) == (7, 0.002, "bf16", "cuda:1")
    assert cfg.model.params == {"hidden": 64, "n_experts": [2, 4, 8]} and cfg.loss["mse"] == 0.25


def test_form_names_the_bad_field(qtbot):
    form = TrainConfigForm()
    qtbot.addWidget(form)
    form.set_config(get_preset("tiny-mlp"))
    form.params.setText("{hidden: [")
    with pytest.raises(ConfigError, match="model parameters"):
        form.config()
    form.params.setText("[1, 2]")
    with pytest.raises(ConfigError, match="expected a mapping"):
        form.config()


def test_kind_change_drops_the_other_kinds_parameters(qtbot):
    form = TrainConfigForm()
    qtbot.addWidget(form)
    form.set_config(get_preset("tiny-moe"))
    form.kind.setCurrentText("ridge")
    assert form.params.text() == "" and not form.epochs.isEnabled()
    assert form.config().model.kind == "ridge"


def _fake_run(folder, name, status, losses):
    run = Run.create(folder / name, TrainConfig.from_dict({"name": name, "model": {"kind": "mlp"}}))
    for step, v in enumerate(losses, start=1):
        run.append_event(Metric(name="loss", value=v, step=step))
    run.append_event(Metric(name="two_way", value=0.8, step=len(losses), split="test"))
    run.write_status(status, step=len(losses), total=10, metrics={"two_way": 0.8})
    return run.path


def test_runs_list_and_compare(qtbot, window, tmp_path):
    window.settings.set_value("folders/runs", str(tmp_path))
    a = _fake_run(tmp_path, "a", "done", [1.0, 0.5, 0.25])
    b = _fake_run(tmp_path, "b", "cancelled", [2.0, 1.0])
    summaries = {s.path.name: s for s in list_runs(tmp_path)}
    assert summaries["a"].metrics["two_way"] == 0.8 and not summaries["a"].resumable
    assert summaries["b"].resumable and summaries["b"].step == 2

    tp = window.panels["training"]
    tp.refresh_runs()
    assert tp.runs.topLevelItemCount() == 2
    tp.runs.select_run(b)
    assert tp._resume_target() == b
    tp.runs.topLevelItem(0).setSelected(True)
    tp.runs.topLevelItem(1).setSelected(True)
    assert tp.compare_btn.isEnabled()
    tp.compare_selected()
    first = tp.runs.selected_runs()[0]
    np.testing.assert_array_equal(tp.curves.series()["loss"][1], [1.0, 0.5, 0.25] if first == a else [2.0, 1.0])
    assert len(tp.curves._compare) == 2  # the other run's loss and test metric, dashed


def test_curves_buffer_until_refresh(qtbot):
    w = CurvesWidget()
    qtbot.addWidget(w)
    for step in range(1, 101):
        w.add_metric("loss", 1.0 / step, step)
        w.add_metric("lr", 1e-3, step)
    assert not w._items  # nothing drawn per event
    assert w.refresh(max_new=None) == 2 and w.refresh() == 0
    x, y = w._items["loss"].getData()
    assert len(x) == 100
    curves = metrics_from_events([Metric("loss", 0.5, 1), Metric("two_way", 0.7, 1, "test"), Progress(1, 2)])
    assert set(curves) == {"loss", "two_way"} and curves["two_way"][2] == "test"


def test_new_curves_are_spread_over_refreshes(qtbot):
    from neurolens_app.widgets.curves import NEW_CURVES_PER_REFRESH

    w = CurvesWidget()
    qtbot.addWidget(w)
    names = [f"loss_{i}" for i in range(2 * NEW_CURVES_PER_REFRESH + 1)]
    for name in names:
        w.add_metric(name, 1.0, 1)
    drawn = [w.refresh() for _ in range(4)]
    assert drawn == [NEW_CURVES_PER_REFRESH, NEW_CURVES_PER_REFRESH, 1, 0]
    assert set(w._items) == set(names)
    w.add_metric(names[0], 0.5, 2)  # an existing curve is always redrawn, with all its points
    assert w.refresh() == 1 and len(w._items[names[0]].getData()[0]) == 2
    w.load_events([Metric(n, 0.1, 1) for n in names])  # a recorded run: drawn a few curves per event-loop turn
    assert 0 < len(w._items) < len(names)
    qtbot.waitUntil(lambda: len(w._items) == len(names), timeout=5000)


def _slow_job(cancel):
    for i in range(2000):
        cancel.raise_if_set()
        time.sleep(0.01)
        yield Progress(i, 2000)


def test_closing_while_a_job_runs_asks_first(qtbot, window, monkeypatch):
    from neurolens_app.panels.job_runner import start_panel_job

    worker = start_panel_job(window.context, _slow_job, "slow job", lambda w: None)
    assert worker is not None
    assert start_panel_job(window.context, _slow_job, "second", lambda w: None) is None  # one device job at a time
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    assert not window.close()
    assert window.isVisible() and asked and "slow job" in asked[0]
    assert worker.outcome is None  # still running
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert window.close()
    assert worker.outcome == "cancelled"


def test_a_failing_job_opens_the_error_dialog(qtbot, loaded_window, tmp_path):
    win = loaded_window
    win.settings.set_value("folders/runs", str(tmp_path))
    tp = win.panels["training"]
    tp.preset.setCurrentText("tiny-mlp")
    tp.form.params.setText("{no_such_parameter: 1}")  # passes the form, refused by the model class in the job
    with qtbot.waitSignal(win.error_shown, timeout=60000) as blocker:
        assert tp.start_training() is not None
    assert "no_such_parameter" in blocker.args[0].message
    qtbot.waitUntil(lambda: tp.worker is None, timeout=30000)
    assert tp.start_btn.isEnabled() and "Failed" in tp.eta.text()


def test_curve_axes_follow_the_data_in_coarse_steps_and_leave_user_zoom_alone(qtbot):
    from neurolens_app.widgets.curves import grown_range

    assert grown_range(None, 0.0, 10.0) == (-2.5, 12.5)
    assert grown_range((-2.5, 12.5), 1.0, 12.0) == (-2.5, 12.5)  # inside: unchanged
    assert grown_range((0.0, 10.0), 0.0, 20.0, floor=0.0) == (0.0, 25.0)  # grows on the side that grew

    w = CurvesWidget()
    qtbot.addWidget(w)
    for step in range(1, 11):
        w.add_metric("loss", 10.0 / step, step)
        w.add_metric("two_way", 0.5 + step / 40, step, "test")
    w.refresh()
    vb_loss, vb_test = w.plots["loss"].getViewBox(), w.plots["test"].getViewBox()
    (x0, x1), (ly0, ly1) = vb_loss.viewRange()
    assert x0 <= 1 and x1 >= 10 and ly0 <= 0.0 <= 1.0 <= ly1  # log10 of the loss values 1..10
    ty0, ty1 = vb_test.viewRange()[1]
    assert ty0 <= 0.525 and ty1 >= 0.75
    before = vb_loss.viewRange()
    w.add_metric("loss", 2.0, 11)  # within the headroom: the axes do not move
    w.refresh()
    np.testing.assert_allclose(vb_loss.viewRange(), before)
    w.add_metric("loss", 0.01, 40)  # far outside: they grow to hold it
    w.refresh()
    (x0, x1), (ly0, ly1) = vb_loss.viewRange()
    assert x1 >= 40 and ly0 <= -2.0
    vb_loss.setXRange(5, 8, padding=0)  # the user zooms in...
    w.add_metric("loss", 0.005, 80)
    w.refresh()
    np.testing.assert_allclose(vb_loss.viewRange()[0], [5, 8])  # ...and keeps the zoom


def test_the_x_axis_spans_the_planned_run_from_the_first_point(qtbot):
    from engine.events import Started

    w = CurvesWidget()
    qtbot.addWidget(w)
    w.set_planned_steps(500)
    w.add_metric("loss", 1.0, 10)
    w.refresh()
    x0, x1 = w.plots["loss"].getViewBox().viewRange()[0]
    assert x0 == 0 and 500 <= x1 <= 515
    w.add_metric("loss", 0.5, 480)
    w.refresh()
    assert w.plots["loss"].getViewBox().viewRange()[0] == [x0, x1]  # unchanged while the run trains
    # a recorded run: its Started event gives the extent, so a finished run fills the plot
    w.load_events([Started(job="train", run_dir="r", total=200), Metric("loss", 1.0, 5), Metric("loss", 0.2, 200)])
    qtbot.waitUntil(lambda: "loss" in w._items, timeout=5000)
    x0, x1 = w.plots["loss"].getViewBox().viewRange()[0]
    assert x0 == 0 and 200 <= x1 <= 210


def test_axes_hold_recorded_live_and_compared_series(qtbot):
    """The axes hold every series: a recorded run, points added live after it, and another run drawn for comparison."""
    from engine.events import Started

    w = CurvesWidget()
    qtbot.addWidget(w)
    w.load_events([Started(job="train", run_dir="r", total=100), Metric("loss", 4.0, 1), Metric("loss", 0.5, 50)])
    qtbot.waitUntil(lambda: "loss" in w._items, timeout=5000)
    w.add_metric("loss", 0.001, 60)  # live, far below the recorded points (log10: -3)
    w.refresh()
    ly0, ly1 = w.plots["loss"].getViewBox().viewRange()[1]
    assert ly0 <= -3.0 and ly1 >= np.log10(4.0)
    w.overlay("other", {"loss": (np.array([1.0, 300.0]), np.array([1000.0, np.nan]), "loss")})
    (x0, x1), (ly0, ly1) = w.plots["loss"].getViewBox().viewRange()
    assert ly1 >= 3.0 and x1 >= 1.0  # the compared run's finite points are in view, its NaN ignored
    assert ly0 <= -3.0  # and the live points still are


def test_the_tensorboard_button_serves_the_selected_run(qtbot, window, tmp_path, monkeypatch):
    """A real ``tensorboard --logdir RUN/tb`` subprocess; only the browser (the boundary) is replaced."""
    import urllib.request

    from torch.utils.tensorboard import SummaryWriter

    from neurolens_app.workers import tensorboard as tb_mod

    window.settings.set_value("folders/runs", str(tmp_path))
    run = _fake_run(tmp_path, "a", "done", [1.0, 0.5])
    tp = window.panels["training"]
    tp.refresh_runs()
    tp.runs.select_run(run)
    tp.open_tensorboard()  # no tb/ yet: a clear word, no process
    assert "has no TensorBoard scalars" in window.statusBar().currentMessage()
    assert tp.tensorboard.process is None
    with SummaryWriter(str(run / "tb")) as w:
        w.add_scalar("train/loss", 1.0, 1)
    opened = []
    monkeypatch.setattr(tb_mod.QDesktopServices, "openUrl", lambda url: opened.append(url.toString()))
    tp.open_tensorboard()
    try:
        qtbot.waitUntil(lambda: bool(opened), timeout=60000)
        assert opened[0].startswith("http://localhost:")
        with urllib.request.urlopen(opened[0] + "data/logdir", timeout=10) as r:
            assert str(run / "tb") in r.read().decode()
    finally:
        tp.tensorboard.stop()
    assert tp.tensorboard.process is None


def test_a_missing_tensorboard_package_gets_a_clear_message(qtbot, window, tmp_path, monkeypatch):
    import engine.train.tensorboard as engine_tb

    window.settings.set_value("folders/runs", str(tmp_path))
    run = _fake_run(tmp_path, "a", "done", [1.0])
    (run / "tb").mkdir()
    monkeypatch.setattr(engine_tb.importlib.util, "find_spec", lambda name: None)
    tp = window.panels["training"]
    tp.refresh_runs()
    tp.runs.select_run(run)
    tp.open_tensorboard()
    assert "pip install tensorboard" in window.statusBar().currentMessage()


def test_scores_and_errors_get_separate_axes(qtbot):
    w = CurvesWidget()
    qtbot.addWidget(w)
    for name, v in (("two_way", 0.9), ("top1_retrieval", 0.4), ("mse", 1.6), ("cosine", 0.5)):
        w.add_metric(name, v, 10, split="test")
    for _ in range(6):
        w.refresh()
    plot_names = {p: {it.name() for it in w.plots[p].listDataItems()} for p in ("test", "test_error")}
    assert plot_names["test"] == {"two_way", "top1_retrieval", "cosine"} and plot_names["test_error"] == {"mse"}
    assert w.plots["test"].getAxis("left").labelText == "score"


def test_show_run_opens_a_run_outside_the_runs_folder(qtbot, loaded_window, tmp_path):
    """What ``neurolens-app --run RUN`` does once the subject is open: the run's folder is listed for this subject
    (the user's runs-folder setting untouched) and the run panels show it."""
    win = loaded_window
    before = win.settings.value("folders/runs")
    run = _fake_run(tmp_path / "elsewhere", "mine", "done", [1.0, 0.5, 0.25])
    win.show_run(run)
    tp = win.panels["training"]
    assert win.context.run.folder == run and tp.runs.selected_runs() == [run]
    np.testing.assert_array_equal(tp.curves.series()["loss"][1], [1.0, 0.5, 0.25])  # its curves, without a click
    assert [win.panels["data"].runs.item(i).text().split()[0] for i in range(win.panels["data"].runs.count())] \
        == ["mine"]
    assert win.settings.value("folders/runs") == before
