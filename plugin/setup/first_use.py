"""First use: make sure a backend exists before something needs it, else open the setup dialog.

Other parts of the plugin (the run dock, a run about to start) call::

    from .setup import ensure_backend

    if not ensure_backend(iface.mainWindow(), message_bar=iface.messageBar()):
        return  # the setup dialog is open; the user starts again once the backend is ready

or ``RegionLensPlugin.ensure_backend()``, which passes QGIS's main window and message bar. The dialog is
one per QGIS session, kept here (it and its running task stay referenced while it is hidden), so a
second call shows the same dialog with its log instead of starting another installation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.PyQt.QtWidgets import QWidget

from ..worker_client import find_backend_python
from .dialog import SetupDialog

__all__ = ["close_setup_dialog", "ensure_backend", "setup_dialog", "show_setup_dialog"]

_dialog: SetupDialog | None = None
_on_ready: list[Callable[[Path], object]] = []


def setup_dialog() -> SetupDialog | None:
    """The setup dialog, if one was opened in this session."""
    return _dialog


def show_setup_dialog(
    parent: QWidget | None = None,
    on_ready: Callable[[Path], object] | None = None,
    **dialog_kwargs: Any,
) -> SetupDialog:
    """Show the (one) setup dialog, creating it on first use. Never blocks: the dialog is modeless.

    Args:
        parent: Parent of a new dialog (QGIS's main window).
        on_ready: Called once with the new interpreter when an installation succeeds.
        dialog_kwargs: Passed to :class:`.dialog.SetupDialog` when it is created (tests inject steps).

    Returns:
        The dialog.
    """
    global _dialog
    if _dialog is None:
        _dialog = SetupDialog(parent, **dialog_kwargs)
        _dialog.backendReady.connect(_backend_ready)
    if on_ready is not None:
        _on_ready.append(on_ready)
    _dialog.show()
    _dialog.raise_()
    _dialog.activateWindow()
    return _dialog


def ensure_backend(
    parent: QWidget | None = None,
    on_ready: Callable[[Path], object] | None = None,
    message_bar: Any = None,
    plugin_root: str | Path | None = None,
) -> bool:
    """Whether a backend interpreter is configured or found; if not, open the setup dialog.

    Args:
        parent: Parent of the setup dialog.
        on_ready: Called with the new interpreter once the setup succeeds (only when this returns False).
        message_bar: A ``QgsMessageBar`` (``iface.messageBar()``) to say why the dialog opened.
        plugin_root: The plugin folder (default: this plugin's).

    Returns:
        True when :func:`plugin.worker_client.find_backend_python` finds an interpreter (whether it
        works is what the options page's "Test backend" checks); False when the setup dialog was
        opened instead: the caller stops and lets the user start again (or waits for ``on_ready``).
    """
    if find_backend_python(plugin_root) is not None:
        return True
    show_setup_dialog(parent, on_ready)
    if message_bar is not None:
        message_bar.pushInfo(
            "RegionLens",
            "The backend (PyTorch and friends, in its own environment) is not set up yet: the setup dialog "
            "creates it; or set the path of an existing one in Settings \u203a Options \u203a RegionLens.",
        )
    return False


def close_setup_dialog() -> None:
    """Cancel a running installation and close the dialog (plugin unload)."""
    global _dialog
    dialog, _dialog = _dialog, None
    _on_ready.clear()
    if dialog is None:
        return
    if dialog.task is not None:
        dialog.task.on_finished = None  # the dialog is going away
        dialog.task.cancel()
    with contextlib.suppress(RuntimeError):  # already deleted with its parent
        dialog.close()
        dialog.deleteLater()


def _backend_ready(python: str) -> None:
    callbacks = list(_on_ready)
    _on_ready.clear()
    for callback in callbacks:
        callback(Path(python))
