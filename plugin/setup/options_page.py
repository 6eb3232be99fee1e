"""The "RegionLens" page of *Settings › Options*: backend path, detected device, "Test backend".

- The backend interpreter (empty = automatic; the page shows what automatic resolves to). Any
  interpreter works, also one the user built by hand; "Test backend" validates it.
- The device: the NVIDIA GPU ``nvidia-smi`` reports and, after "Test backend", what the worker itself
  says (``info``: torch version, device, CUDA devices, methods).
- "Set up backend…" opens the setup dialog.

"Test backend" starts the worker in a background thread (the first torch import takes seconds) and
shows its answer, or the error with the worker's stderr. ``apply()`` (OK in the Options dialog) saves the path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..settings import Setting
from ..tasks import PLUGIN_ROOT, RunFailed, RunSucceeded, run_info
from .background import BackgroundCall
from .environment import automatic_backend_python, detect_gpu

__all__ = ["RegionLensOptionsFactory", "RegionLensOptionsPage", "describe_info"]

ICON = PLUGIN_ROOT / "resources" / "icon.svg"


def describe_info(info: dict[str, Any]) -> str:
    """The worker's ``info`` in a few lines for the user."""
    cuda = info.get("cuda_devices") or []
    methods = info.get("methods") or {}
    lines = [
        f"Device: {info.get('device', '?')}",
        f"torch {info.get('torch', '?')}, Python {info.get('python', '?')}, "
        f"RegionLens backend {info.get('version', '?')}",
        f"CUDA devices: {', '.join(map(str, cuda)) if cuda else 'none'}",
        f"Methods: {', '.join(methods) if methods else 'none'}",
    ]
    if info.get("executable"):
        lines.append(f"Interpreter: {info['executable']}")
    return "\n".join(lines)


def _describe_failure(outcome: Any, error: Any) -> tuple[str, str]:
    """(summary, details) of a failed test: the worker's :class:`~plugin.tasks.RunFailed`, or what the call
    raised."""
    if isinstance(outcome, RunFailed):
        message = outcome.message.splitlines()[0] if outcome.kind == "died" and outcome.message else outcome.message
        return f"The backend did not work: {message}", outcome.details
    if error is not None:
        return f"The backend did not work: {type(error).__name__}: {error}", ""
    return "The backend did not work: it gave no answer.", ""


class RegionLensOptionsPage(QgsOptionsPageWidget):
    """The page itself.

    Args:
        parent: The Options dialog's page container.
        open_setup: Opens the setup dialog (the plugin's; default :func:`.first_use.show_setup_dialog`).
        plugin_root: The plugin folder (working directory of the worker).
    """

    def __init__(
        self,
        parent: QWidget | None = None,
        open_setup: Callable[[], object] | None = None,
        plugin_root: str | Path = PLUGIN_ROOT,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("RegionLensOptionsPage")
        self.plugin_root = Path(plugin_root)
        self.open_setup = open_setup
        self.last_info: dict[str, Any] | None = None  # the worker's latest ``info``
        self.last_error: str | None = None  # the latest test's error summary
        self._calls: list[BackgroundCall] = []  # running background calls, referenced until done
        self._build()
        self.python_widget.setFilePath(str(Setting.BACKEND_PYTHON.get() or ""))
        self.python_widget.fileChanged.connect(self._update_automatic)
        self._update_automatic()
        self._start(detect_gpu, self._on_gpu, "regionlens-nvidia-smi")

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.python_widget = QgsFileWidget()
        self.python_widget.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.python_widget.setDialogTitle("Python interpreter of the RegionLens backend environment")
        self.python_widget.lineEdit().setPlaceholderText("automatic")
        self.automatic_label = QLabel("")
        self.automatic_label.setWordWrap(True)
        self.automatic_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        hint = QLabel(
            "Any Python of an environment with the backend's packages works (requirements/backend.txt), also "
            "one you built by hand; \u201cTest backend\u201d checks it. To train on another computer (a GPU "
            "server), run RegionLens there and open its results here with Plugins \u203a RegionLens \u203a "
            "Open run results\u2026"
        )
        hint.setWordWrap(True)
        backend_box = QGroupBox("Backend Python")
        box = QVBoxLayout(backend_box)
        box.addWidget(self.python_widget)
        box.addWidget(self.automatic_label)
        box.addWidget(hint)

        self.gpu_label = QLabel("NVIDIA GPU: looking (nvidia-smi)\u2026")
        self.gpu_label.setWordWrap(True)
        self.result_label = QLabel("Backend: not tested yet.")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_view = QPlainTextEdit()
        self.details_view.setReadOnly(True)
        self.details_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details_view.setMaximumHeight(160)
        self.details_view.setVisible(False)
        device_box = QGroupBox("Device")
        box = QVBoxLayout(device_box)
        box.addWidget(self.gpu_label)
        box.addWidget(self.result_label)
        box.addWidget(self.details_view)

        self.test_button = QPushButton("Test backend")
        self.test_button.clicked.connect(self.test_backend)
        self.setup_button = QPushButton("Set up backend\u2026")
        self.setup_button.clicked.connect(self._open_setup)
        buttons = QHBoxLayout()
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.setup_button)
        buttons.addStretch(1)

        layout = QVBoxLayout(self)
        layout.addWidget(backend_box)
        layout.addWidget(device_box)
        layout.addLayout(buttons)
        layout.addStretch(1)

    # ------------------------------------------------------------------ behaviour

    def configured_python(self) -> str:
        """The path typed in the page ("" = automatic)."""
        return self.python_widget.filePath().strip()

    def effective_python(self) -> Path | None:
        """The interpreter "Test backend" uses: the typed one, else what automatic resolves to."""
        configured = self.configured_python()
        return Path(configured).expanduser() if configured else automatic_backend_python(self.plugin_root)

    def apply(self) -> None:
        """Save the path (QGIS calls this when the Options dialog is accepted)."""
        Setting.BACKEND_PYTHON.set(self.configured_python())

    def test_backend(self) -> None:
        """Start the worker in the background and show its ``info`` (or why it failed)."""
        python = self.effective_python()
        if python is None:
            self._show_error("No backend found. Click \u201cSet up backend\u2026\u201d or choose an interpreter.", "")
            return
        self.test_button.setEnabled(False)
        self.result_label.setText(f"Backend: starting {python}\u2026")
        self.details_view.setVisible(False)
        root = self.plugin_root
        self._start(lambda: run_info(python, plugin_root=root), self._on_info, "regionlens-test-backend")

    @property
    def testing(self) -> bool:
        """Whether a test is running."""
        return not self.test_button.isEnabled()

    def _on_info(self, outcome: Any, error: Any) -> None:
        self.test_button.setEnabled(True)
        if error is not None or not isinstance(outcome, RunSucceeded):
            self._show_error(*_describe_failure(outcome, error))
            return
        self.last_info = outcome.result if isinstance(outcome.result, dict) else {}
        self.last_error = None
        self.result_label.setText("Backend works.\n" + describe_info(self.last_info))

    def _show_error(self, summary: str, details: str) -> None:
        self.last_info = None
        self.last_error = summary
        self.result_label.setText(summary)
        self.details_view.setPlainText(details)
        self.details_view.setVisible(bool(details))

    def _on_gpu(self, gpu: Any, error: Any) -> None:
        if gpu is not None:
            self.gpu_label.setText(f"NVIDIA GPU: {gpu.describe()} (nvidia-smi)")
        else:
            self.gpu_label.setText("NVIDIA GPU: none found (nvidia-smi is missing or lists none).")

    def _update_automatic(self, *_args: object) -> None:
        if self.configured_python():
            path = Path(self.configured_python()).expanduser()
            missing = f"{path} does not exist; RegionLens would fall back to automatic."
            self.automatic_label.setText(f"Uses {path}." if path.is_file() else missing)
            return
        found = automatic_backend_python(self.plugin_root)
        self.automatic_label.setText(
            f"Automatic: uses {found}." if found is not None
            else "Automatic: no backend found yet. Click \u201cSet up backend\u2026\u201d to create one."
        )  # fmt: skip

    def _open_setup(self) -> None:
        if self.open_setup is not None:
            self.open_setup()
            return
        from .first_use import show_setup_dialog

        show_setup_dialog(self.window())

    def _start(self, fn: Callable[[], Any], on_done: Callable[[Any, Any], None], name: str) -> None:
        self._calls = [c for c in self._calls if c.running]  # keep the running ones referenced
        call = BackgroundCall(fn, name, self)
        self._calls.append(call)
        call.done.connect(on_done)  # a method of this widget: delivered in the GUI thread
        call.start()


class RegionLensOptionsFactory(QgsOptionsWidgetFactory):
    """Registers the "RegionLens" page (``iface.registerOptionsWidgetFactory``).

    Args:
        open_setup: Opens the setup dialog (passed on to each page).
        plugin_root: The plugin folder.
    """

    def __init__(self, open_setup: Callable[[], object] | None = None, plugin_root: str | Path = PLUGIN_ROOT) -> None:
        super().__init__("RegionLens", QIcon(str(ICON)))
        self.open_setup = open_setup
        self.plugin_root = Path(plugin_root)

    def icon(self) -> QIcon:  # noqa: D102 - QGIS API
        return QIcon(str(ICON))

    def createWidget(self, parent: QWidget | None = None) -> RegionLensOptionsPage:  # noqa: N802 - QGIS API
        """Build a page for the Options dialog."""
        return RegionLensOptionsPage(parent, open_setup=self.open_setup, plugin_root=self.plugin_root)
