"""The banner at the top of the run dock while no backend exists: what is missing and a button to set it up.

It sits above the dock's scroll area, so it is the first thing a planner sees, whatever the dock's height.
"""

from __future__ import annotations

from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

__all__ = ["BACKEND_MISSING", "BACKEND_MISSING_PROBLEM", "OPTIONS_PAGE", "BackendBanner"]

#: Where an existing backend's interpreter is set (QGIS's options dialog, RegionLens page).
OPTIONS_PAGE = "Settings \u203a Options \u203a RegionLens"
#: The banner's text.
BACKEND_MISSING = (
    "<b>The backend is not set up yet.</b> RegionLens learns in its own Python environment: set it up "
    f"here, or choose an existing one in <i>{OPTIONS_PAGE}</i>."
)
#: The line in the dock's list of problems.
BACKEND_MISSING_PROBLEM = "Set up the backend first (the button at the top of this dock)."


class BackendBanner(QFrame):
    """A framed, tinted message with a *Set up the backend…* button; hidden while a backend exists."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RegionLensBackendBanner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet(
            "#RegionLensBackendBanner { background: #fff4e5; border: 1px solid #f0a030; border-radius: 4px; }"
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        self.label = QLabel(BACKEND_MISSING, self)
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        layout.addWidget(self.label)
        row = QHBoxLayout()
        self.button = QPushButton("Set up the backend\u2026", self)
        self.button.setObjectName("RegionLensSetUpBackend")
        self.button.setToolTip("Create the backend environment, or set the path of an existing one")
        row.addWidget(self.button)
        row.addStretch(1)
        layout.addLayout(row)
        # its full height (the wrapped text included) whatever the dock's height: the form below scrolls instead
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setVisible(False)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """The height the wrapped text needs at the current width (the layout's hint assumes a wide label)."""
        hint = super().sizeHint()
        return QSize(hint.width(), max(hint.height(), self.heightForWidth(max(self.width(), 1))))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Never less than :meth:`sizeHint`'s height: the text is not clipped."""
        return QSize(super().minimumSizeHint().width(), self.sizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """A new width changes the wrapped height: let the dock's layout ask again."""
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.updateGeometry()
