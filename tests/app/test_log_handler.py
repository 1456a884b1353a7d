"""The app's log handler outlives the Qt objects it reports through (a pool job logging while the app exits)."""

from __future__ import annotations

import logging

import shiboken6

from neurolens_app.log_handler import QtLogHandler


def test_a_record_after_the_emitter_is_gone_is_kept_not_raised(qapp):
    handler = QtLogHandler()
    seen = []
    handler.emitter.record.connect(lambda level, text: seen.append(text))
    record = logging.LogRecord("engine", logging.WARNING, __file__, 1, "short job failed", None, None)
    handler.emit(record)
    assert seen and seen[-1].endswith("short job failed")
    shiboken6.delete(handler.emitter)  # what application teardown does to it
    handler.emit(logging.LogRecord("engine", logging.WARNING, __file__, 2, "after exit", None, None))
    assert handler.history[-1][1].endswith("after exit") and len(seen) == 1
