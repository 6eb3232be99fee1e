"""Scrolling a form must scroll it, not change the dropdown or spin box that happens to be under the pointer.

:func:`guard_wheel` is called once per form (the run dock, the method panels, the Apply dialog): every
combo box and spin box below the given widget then takes the wheel only while it has the keyboard focus
(click it, or tab to it, first); otherwise the wheel event goes on to the scroll area around it. Editors
created later inside a guarded widget are guarded as they appear.
"""

from __future__ import annotations

from qgis.PyQt.QtCore import QEvent, QObject, Qt
from qgis.PyQt.QtWidgets import QAbstractSpinBox, QComboBox, QWidget

__all__ = ["guard_wheel", "WheelGuard"]

_GUARDED = (QComboBox, QAbstractSpinBox)


class WheelGuard(QObject):
    """Event filter: ignores wheel events of unfocused combo and spin boxes; guards editors added later."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        kind = event.type()
        if kind == QEvent.Type.Wheel and isinstance(watched, _GUARDED) and not watched.hasFocus():
            event.ignore()  # not consumed by the editor: the parent (the scroll area) scrolls
            return True
        if kind == QEvent.Type.ChildPolished and isinstance(watched, QWidget):  # (fully built, before shown)
            child = event.child()
            if isinstance(child, QWidget):
                self.guard(child)
        return False

    def guard(self, root: QWidget) -> None:
        """Guard ``root`` and every combo or spin box below it (each once)."""
        for widget in [root, *root.findChildren(QWidget)]:
            if widget.property("regionlens_wheel_guard"):
                continue
            widget.setProperty("regionlens_wheel_guard", True)
            widget.installEventFilter(self)
            if isinstance(widget, _GUARDED):
                widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # a wheel no longer takes the focus


def guard_wheel(root: QWidget) -> WheelGuard:
    """Make the combo and spin boxes below ``root`` ignore the wheel unless focused; returns the guard.

    The guard is a child of ``root`` (it lives as long as the form does).
    """
    guard = WheelGuard(root)
    guard.guard(root)
    return guard
