"""Message-bar items with a "Details" button that opens a read-only text dialog (log, traceback)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qgis.core import Qgis
from qgis.gui import QgsMessageBar, QgsMessageBarItem
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QFontDatabase, QTextOption
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["MAX_MESSAGE_CHARS", "DetailsDialog", "push_message", "shorten"]

TITLE = "RegionLens"
#: Longest text the message bar shows in full (about two lines of a 1,000-pixel bar); a longer text, or one of
#: several lines, is shown shortened and in full at the top of its *Details*.
MAX_MESSAGE_CHARS = 160


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as the message bar shows it: its first line, cut at a word boundary to ``limit`` characters
    with an ellipsis (unchanged when it is one short line)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) <= limit and first == text.strip():
        return first
    if len(first) > limit:
        cut = first[: limit - 1]
        space = cut.rfind(" ")
        first = cut[:space] if space > limit // 2 else cut
    return first.rstrip(" ,;:") + "\u2026"


class DetailsDialog(QDialog):
    """A read-only, monospaced text (a run log or a traceback) with Copy and Close buttons.

    Long lines wrap at the window's width (at word boundaries where there are any), so a log line is
    read without scrolling sideways.

    Args:
        title: Window title.
        text: The text.
        parent: Parent widget.
    """

    def __init__(self, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(760, 480)
        layout = QVBoxLayout(self)
        self.text_edit = QPlainTextEdit(self)
        self.text_edit.setReadOnly(True)
        self.text_edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)  # long log lines wrap, no scrolling
        self.text_edit.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.text_edit.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text_edit.setPlainText(text)
        layout.addWidget(self.text_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda _checked=False: QApplication.clipboard().setText(self.text_edit.toPlainText()))
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def text(self) -> str:
        """The text shown."""
        return self.text_edit.toPlainText()


def push_message(
    bar: QgsMessageBar,
    text: str,
    level: Qgis.MessageLevel = Qgis.MessageLevel.Info,
    details: str = "",
    details_title: str = "RegionLens details",
    duration: int | None = None,
    parent: QWidget | None = None,
    actions: Sequence[tuple[str, Callable[[], object]]] = (),
) -> QgsMessageBarItem:
    """Push ``RegionLens: <text>`` to the message bar, with a "Details" button when ``details`` is given.

    A text too long for the bar (:data:`MAX_MESSAGE_CHARS`, or several lines) is shown shortened
    (:func:`shorten`) and in full at the top of the details, so nothing is clipped away.

    Args:
        bar: The message bar (``iface.messageBar()``).
        text: The message.
        level: Its level.
        details: Text the "Details" button shows (none: no button).
        details_title: Title of the details dialog.
        duration: Seconds before it disappears (0: stays; default: QGIS's default for the level, but
            critical messages stay).
        parent: Parent of the details dialog (e.g. the main window).
        actions: ``(button text, callback)`` pairs: more buttons on the message (e.g. "Open folder").

    Returns:
        The pushed item; ``item.details_button`` is the button (or ``None``) and ``item.details_dialog``
        the dialog once it was opened.
    """
    short = shorten(text)
    if short != text.strip():  # the bar would clip it: the whole text opens from "Details"
        details = text.strip() + (f"\n\n{details}" if details else "")
    item = QgsMessageBar.createMessage(TITLE, short, bar)
    item.details_button = None
    item.details_dialog = None
    if details:
        button = QPushButton("Details", item)
        button.setToolTip("Show the full log")

        def show_details(_checked: bool = False) -> None:
            dialog = DetailsDialog(details_title, details, parent)
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
            item.details_dialog = dialog
            dialog.show()

        button.clicked.connect(show_details)
        item.layout().addWidget(button)
        item.details_button = button
    item.action_buttons = []
    for text_, callback in actions:
        action = QPushButton(text_, item)
        action.clicked.connect(lambda _checked=False, run=callback: run())
        item.layout().addWidget(action)
        item.action_buttons.append(action)
    if duration is None:
        duration = 0 if level == Qgis.MessageLevel.Critical else QgsMessageBar.defaultMessageTimeout(level)
    bar.pushWidget(item, level, duration)
    return item
