"""``SetupDialog``: create the backend environment (first use, or *Plugins › RegionLens › Set up backend…*).

Shows what was detected (NVIDIA GPU, base Python), which torch build gets installed and why, the
target folder, and runs :class:`.installer.BackendInstallTask` in QGIS's task manager with a live log,
a progress bar and a Cancel button. Detection runs in a background thread, the installation in a
QgsTask: the dialog never blocks QGIS. Closing the dialog only hides it; a running installation goes
on in QGIS's task bar (cancel it there or here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsTaskManager
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..settings import Setting
from ..worker_client import venv_python
from .background import BackgroundCall
from .environment import (
    ENVIRONMENT_GB,
    GpuInfo,
    InstallStep,
    PythonInfo,
    TorchChoice,
    check_free_space,
    check_target_dir,
    choose_torch,
    cpu_torch,
    cuda_torch,
    default_backend_dir,
    detect_gpu,
    find_base_python,
    install_plan,
)
from .installer import BackendInstallTask, InstallCancelled, InstallFailed, InstallOutcome, InstallSucceeded

__all__ = ["PLUGIN_ROOT", "SetupDialog", "StepsFactory"]

#: The plugin folder: holds requirements/backend.txt and backend/ (the verify step runs there).
PLUGIN_ROOT = Path(__file__).resolve().parents[2]

#: ``(base_python, venv_dir, torch_choice) -> steps``; the default is :func:`.environment.install_plan`.
StepsFactory = Callable[[Path, Path, TorchChoice], Sequence[InstallStep | Sequence[str]]]


def _detect() -> tuple[GpuInfo | None, PythonInfo | None]:
    return detect_gpu(), find_base_python()


class SetupDialog(QDialog):
    """Set up the RegionLens backend.

    Args:
        parent: Parent widget (QGIS's main window).
        plugin_root: The plugin folder (``requirements/backend.txt``, ``backend/``).
        make_steps: Builds the step list (tests inject cheap commands).
        detect: Returns ``(gpu, base_python)``; runs in a background thread (default: nvidia-smi and
            :func:`.environment.find_base_python`).
        target_dir: Folder to propose (default :func:`.environment.default_backend_dir`).
        task_manager: Where the installation task runs (default QGIS's).

    Signals:
        backendReady(str): the new interpreter, after a successful installation.
    """

    backendReady = pyqtSignal(str)  # noqa: N815 - Qt signal naming

    def __init__(
        self,
        parent: QWidget | None = None,
        plugin_root: str | Path = PLUGIN_ROOT,
        make_steps: StepsFactory | None = None,
        detect: Callable[[], tuple[GpuInfo | None, PythonInfo | None]] = _detect,
        target_dir: str | Path | None = None,
        task_manager: QgsTaskManager | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("RegionLens \u2014 set up the backend")
        self.plugin_root = Path(plugin_root)
        self.make_steps = make_steps or self._default_steps
        self.task_manager = task_manager
        self.gpu: GpuInfo | None = None
        self.base_info: PythonInfo | None = None
        self.detected = False
        self.task: BackendInstallTask | None = None  # referenced while it runs
        self.outcome: InstallOutcome | None = None
        self._detection: BackgroundCall | None = None
        self._build(Path(target_dir) if target_dir is not None else default_backend_dir())
        self._detection = BackgroundCall(detect, "regionlens-detect", self)
        self._detection.done.connect(self._on_detected)
        self._detection.start()

    # ------------------------------------------------------------------ layout

    def _build(self, target: Path) -> None:
        intro = QLabel(
            "RegionLens trains in its own Python environment (PyTorch, geopandas, \u2026), separate from "
            "QGIS. This creates it, installs the pinned packages and checks the offline models. It takes a "
            "few minutes, needs an internet connection once and, with PyTorch's CPU build, about "
            f"{ENVIRONMENT_GB['cpu']:g} GB of disk (the exact figure for the build chosen is below)."
        )
        intro.setWordWrap(True)

        self.gpu_label = QLabel("Looking for an NVIDIA GPU\u2026")
        self.gpu_label.setWordWrap(True)
        self.torch_combo = QComboBox()
        self.torch_combo.addItem("Automatic", "auto")
        self.torch_combo.addItem("CPU build", "cpu")
        self.torch_combo.addItem("CUDA build (NVIDIA GPU)", "cuda")
        self.torch_combo.currentIndexChanged.connect(self._update_choice)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)

        self.python_widget = QgsFileWidget()
        self.python_widget.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.python_widget.setDialogTitle("Python 3.11 to 3.13 to create the backend environment from")
        chosen_before = str(Setting.SETUP_BASE_PYTHON.get() or "")
        if chosen_before and Path(chosen_before).is_file():
            self.python_widget.setFilePath(chosen_before)
        self.python_label = QLabel("Looking for a Python interpreter\u2026")
        self.python_label.setWordWrap(True)

        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setDialogTitle("Folder for the RegionLens backend environment")
        self.folder_widget.setFilePath(str(target))
        folder_note = QLabel("A new or empty folder, or an existing RegionLens environment to update.")
        folder_note.setWordWrap(True)

        form = QFormLayout()
        form.addRow("GPU:", self.gpu_label)
        form.addRow("torch build:", self.torch_combo)
        form.addRow("", self.reason_label)
        form.addRow("Base Python:", self.python_widget)
        form.addRow("", self.python_label)
        form.addRow("Install into:", self.folder_widget)
        form.addRow("", folder_note)

        self.steps_view = QPlainTextEdit()  # what happens, in plain steps
        self.steps_view.setReadOnly(True)
        self.steps_view.setMinimumHeight(110)
        self.log_view = QPlainTextEdit()  # the raw output of every command, behind "Details"
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(20000)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setMinimumHeight(160)
        self.log_view.setVisible(False)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setToolTip("Show the full output of every command (pip, Python)")
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.toggled.connect(self._show_details)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        self.install_button = QPushButton("Install")
        self.install_button.setEnabled(False)  # until detection is done
        self.install_button.clicked.connect(self.start_install)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_install)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.install_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(QLabel("Progress:"))
        layout.addWidget(self.steps_view, 1)
        layout.addWidget(self.details_button)
        layout.addWidget(self.log_view, 2)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)
        self.resize(780, 720)

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        """Whether an installation is under way."""
        return self.task is not None

    def torch_choice(self) -> TorchChoice:
        """The torch build the Install button would install."""
        mode = self.torch_combo.currentData()
        if mode == "cpu":
            return cpu_torch()
        if mode == "cuda":
            return cuda_torch()
        return choose_torch(self.gpu)

    def target_dir(self) -> Path:
        """The folder the backend is installed into."""
        return Path(self.folder_widget.filePath().strip()).expanduser()

    def base_python(self) -> str:
        """The interpreter the environment is created from ("" when none was found or chosen)."""
        return self.python_widget.filePath().strip()

    def append_log(self, line: str) -> None:
        """Add one line of raw output to the details log."""
        self.log_view.appendPlainText(line)

    def append_step(self, line: str) -> None:
        """Add one plain line to the progress list (and to the details log)."""
        self.steps_view.appendPlainText(line)

    def _show_details(self, shown: bool) -> None:
        self.log_view.setVisible(shown)
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _on_detected(self, result: Any, error: Any) -> None:
        self._detection = None
        self.detected = True
        if error is not None or not isinstance(result, tuple):
            self.gpu_label.setText(f"Detection failed: {error}")
        else:
            self.gpu, self.base_info = result
        if self.gpu is not None:
            self.gpu_label.setText(f"{self.gpu.describe()} (nvidia-smi)")
        elif error is None:
            self.gpu_label.setText("No NVIDIA GPU found (nvidia-smi is missing or lists none).")
        if self.base_info is not None:
            if not self.base_python():
                self.python_widget.setFilePath(str(self.base_info.path))
            self.python_label.setText(f"Found {self.base_info.describe()}.")
        elif self.base_python():
            self.python_label.setText("Using the interpreter chosen before.")
        else:
            self.python_label.setText(
                "No suitable Python found. Install Python 3.11 to 3.13 (python.org; on Debian/Ubuntu also "
                "python3-venv) and choose its interpreter here. The Python inside QGIS cannot be used on "
                "Windows and macOS."
            )
        self._update_choice()
        self.install_button.setEnabled(not self.running)

    def _update_choice(self, *_args: object) -> None:
        self.reason_label.setText(self.torch_choice().reason if self.detected else "")

    # ------------------------------------------------------------------ install

    def _default_steps(self, base_python: Path, venv_dir: Path, torch: TorchChoice) -> Sequence[InstallStep]:
        requirements = self.plugin_root / "requirements" / "backend.txt"
        return install_plan(base_python, venv_dir, torch, requirements, self.plugin_root)

    def start_install(self) -> BackendInstallTask | None:
        """Check the inputs and queue the installation task; returns it (None when an input is wrong)."""
        if self.running:
            return self.task
        problem = check_target_dir(self.folder_widget.filePath())
        base = self.base_python()
        if problem is None and not base:
            problem = "Choose a Python 3.11 to 3.13 interpreter to create the environment from."
        if problem is None and not Path(base).is_file():
            problem = f"The base Python does not exist: {base}"
        if problem is None:
            problem = check_free_space(self.target_dir(), self.torch_choice())
        if problem is not None:
            self.status_label.setText(problem)
            return None
        venv_dir = self.target_dir()
        choice = self.torch_choice()
        try:
            steps = self.make_steps(Path(base), venv_dir, choice)
        except OSError as exc:
            self.status_label.setText(f"Cannot read the backend's requirements: {exc}")
            return None
        Setting.SETUP_BASE_PYTHON.set(base)
        self.outcome = None
        self.log_view.clear()
        self.steps_view.clear()
        self.append_log(choice.reason)
        self.append_log(f"Installing into {venv_dir}")
        self.append_step(f"{choice.reason} Installing into {venv_dir}.")
        task = BackendInstallTask(venv_dir, steps, on_finished=self._on_finished, python=venv_python(venv_dir))
        task.logLine.connect(self.append_log)
        task.stepStarted.connect(self._on_step)
        task.progressChanged.connect(self._on_progress)
        self.task = task
        self.progress.setValue(0)
        self.status_label.setText("Installing\u2026 (you can close this window; the task goes on in QGIS's task bar)")
        self._set_running(True)
        (self.task_manager or QgsApplication.taskManager()).addTask(task)
        return task

    def cancel_install(self) -> None:
        """Cancel the running installation (its step is stopped, the unfinished folder removed)."""
        if self.task is not None:
            self.status_label.setText("Cancelling\u2026")
            self.cancel_button.setEnabled(False)
            self.task.cancel()

    def _on_step(self, index: int, count: int, title: str) -> None:
        self.status_label.setText(f"Step {index + 1} of {count}: {title}\u2026")
        self.append_step(f"{index + 1}/{count}  {title}\u2026")

    def _on_progress(self, value: float) -> None:
        self.progress.setValue(round(value))

    def _on_finished(self, outcome: InstallOutcome) -> None:
        self.task = None
        self.outcome = outcome
        self._set_running(False)
        if isinstance(outcome, InstallSucceeded):
            self.progress.setValue(100)
            self.status_label.setText(
                f"The backend is ready ({outcome.seconds:.0f} s): {outcome.python}. RegionLens uses it from now on."
            )
            self.append_step("Done: the backend is ready.")
            self.install_button.setEnabled(False)  # installed: nothing left to do here
            self.install_button.setText("Installed")
            self.backendReady.emit(str(outcome.python))
        elif isinstance(outcome, InstallFailed):
            self.progress.setValue(0)
            self.append_log(outcome.message)
            self.append_step(f"Failed: {outcome.step}. Details shows the full output.")
            self.details_button.setChecked(True)  # the raw output says why
            self.status_label.setText(f"Setup failed at \u201c{outcome.step}\u201d. The details below show why.")
        elif isinstance(outcome, InstallCancelled):
            self.progress.setValue(0)
            self.append_step("Cancelled.")
            self.status_label.setText(outcome.message)

    def _set_running(self, running: bool) -> None:
        self.install_button.setEnabled(not running and self.detected)
        self.cancel_button.setEnabled(running)
        for widget in (self.torch_combo, self.python_widget, self.folder_widget):
            widget.setEnabled(not running)
