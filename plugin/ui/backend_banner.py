"""The banner at the top of the run dock while no backend exists: what is missing and a button to set it up.

It sits above the dock's scroll area, so it is the first thing a planner sees, whatever the dock's height.
"""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

__all__ = ["BACKEND_MISSING", "BACKEND_MISSING_PROBLEM", "OPTIONS_PAGE", "BackendBanner"]

#: Where an existing backend's interpreter is set (QGIS's options dialog, RegionLens page).
OPTIONS_PAGE = "Settings \u203a Options \u203a RegionLens"
#: The banner's text.
BACKEND_MISSING = (
    "<b>The RegionLens backend is not set up yet.</b> It is the Python environment (PyTorch and friends) "
    f"where the embeddings are learned. Set it up here, or choose an existing one in {OPTIONS_PAGE}."
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
        self.setVisible(False)
