"""Dialogs: errors with details, import of plain arrays, figure export, keyboard shortcuts, about."""
