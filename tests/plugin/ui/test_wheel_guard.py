"""plugin/ui/wheel_guard.py: the mouse wheel scrolls a form instead of changing the editor under the pointer."""

from __future__ import annotations

from qgis.PyQt.QtCore import QPoint, QPointF, Qt
from qgis.PyQt.QtGui import QWheelEvent
from qgis.PyQt.QtWidgets import QApplication, QComboBox, QScrollArea, QSpinBox, QVBoxLayout, QWidget

from plugin.ui.wheel_guard import guard_wheel


def wheel(widget: QWidget, steps: int = -1) -> QWheelEvent:
    """Send one synthetic wheel notch (down for negative ``steps``) to the middle of ``widget``.

    Qt hands a spontaneous (real) wheel event that a widget leaves unaccepted on to its parent, up to the
    scroll area; a synthetic one stops at the receiver, so the tests check ``isAccepted()`` instead.
    """
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(
        centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False,
    )  # fmt: skip
    QApplication.sendEvent(widget, event)
    return event


def form(qtbot) -> tuple[QComboBox, QSpinBox, QWidget, QScrollArea]:
    scroll = QScrollArea()
    content = QWidget()
    layout = QVBoxLayout(content)
    combo = QComboBox(content)
    combo.addItems(["a", "b", "c"])
    spin = QSpinBox(content)
    spin.setValue(5)
    layout.addWidget(combo)
    layout.addWidget(spin)
    layout.addSpacing(2000)  # taller than the viewport: the area can scroll
    scroll.setWidget(content)
    scroll.resize(200, 150)
    qtbot.addWidget(scroll)
    scroll.show()
    return combo, spin, content, scroll


def test_unfocused_editors_pass_the_wheel_to_the_scroll_area(qtbot) -> None:
    combo, spin, content, _scroll = form(qtbot)
    guard_wheel(content)
    assert not wheel(combo).isAccepted() and not wheel(spin).isAccepted()  # left for the scroll area
    assert combo.currentIndex() == 0 and spin.value() == 5
    assert combo.focusPolicy() == Qt.FocusPolicy.StrongFocus


def test_focused_editor_still_takes_the_wheel(qtbot) -> None:
    combo, _spin, content, _scroll = form(qtbot)
    guard_wheel(content)
    combo.setFocus()
    qtbot.waitUntil(combo.hasFocus)
    assert wheel(combo).isAccepted()
    assert combo.currentIndex() == 1


def test_editors_added_later_are_guarded(qtbot) -> None:
    _combo, _spin, content, _scroll = form(qtbot)
    guard_wheel(content)
    late = QComboBox(content)
    late.addItems(["x", "y"])
    content.layout().insertWidget(0, late)
    late.show()
    wheel(late)
    assert late.currentIndex() == 0


def test_without_the_guard_the_wheel_changes_the_editor(qtbot) -> None:
    """The defect the guard fixes (so the tests above can fail)."""
    combo, _spin, _content, _scroll = form(qtbot)
    wheel(combo)
    assert combo.currentIndex() == 1
