"""Backend setup (plugin/setup/): GPU detection, torch choice, install steps, the install task, the setup
dialog, the options page and first use, in real QGIS offscreen.

No test installs anything: the install task runs cheap real commands (a venv made ``--without-pip``,
``python -c``, ``sleep``); "Test backend" uses the development backend (``.venv/backend``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication

from plugin import tasks
from plugin.main import RegionLensPlugin
from plugin.settings import Setting
from plugin.setup import environment, first_use
from plugin.setup.dialog import SetupDialog
from plugin.setup.environment import (
    CPU_INDEX_URL,
    TORCH_VERSION,
    GpuInfo,
    InstallStep,
    check_target_dir,
    choose_torch,
    default_backend_dir,
    detect_gpu,
    find_base_python,
    install_plan,
    install_steps,
    parse_nvidia_smi,
    probe_python,
    read_requirements,
)
from plugin.setup.installer import BackendInstallTask, InstallCancelled, InstallFailed, InstallSucceeded
from plugin.setup.options_page import RegionLensOptionsFactory, RegionLensOptionsPage
from plugin.worker_client import venv_python

posix_only = pytest.mark.skipif(os.name == "nt", reason="shell-script fakes and `sleep`")

BASE_PYTHON = Path("/usr/bin/python3")  # Debian's python: has venv; builds a --without-pip venv in about 1 s
SLEEP = shutil.which("sleep") or "/bin/sleep"  # absolute: some tests replace PATH
RTX_LINE = "NVIDIA GeForce RTX 4090, 550.54.14, 24564 MiB"


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only a fake ``nvidia-smi`` that reports one RTX 4090."""
    folder = tmp_path / "fakebin"
    _script(folder, "nvidia-smi", f'echo "{RTX_LINE}"')
    monkeypatch.setenv("PATH", str(folder))
    return folder


@pytest.fixture
def no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds no ``nvidia-smi``."""
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture(autouse=True)
def saved_settings() -> Iterator[None]:
    """Restore the settings the setup writes."""
    keys = (Setting.BACKEND_PYTHON, Setting.SETUP_BASE_PYTHON)
    before = {key: key.get() for key in keys}
    yield
    for key, value in before.items():
        key.set(value)


@pytest.fixture
def base_python() -> Path:
    if not BASE_PYTHON.is_file():
        pytest.skip("needs Debian's /usr/bin/python3")
    return BASE_PYTHON


def _run(task: BackendInstallTask, qtbot, timeout_ms: int = 30_000):
    outcomes: list = []
    task.on_finished = outcomes.append
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=timeout_ms)
    return outcomes[0]


def _cheap_venv(base: Path, venv: Path) -> list[str]:
    return [str(base), "-m", "venv", "--without-pip", str(venv)]


# ---------------------------------------------------------------- GPU and torch choice


@posix_only
def test_detect_gpu_with_fake_nvidia_smi(fake_gpu: Path) -> None:
    gpu = detect_gpu()
    assert gpu == GpuInfo(name="NVIDIA GeForce RTX 4090", driver="550.54.14", memory_mib=24564, count=1)
    assert gpu.describe() == "NVIDIA GeForce RTX 4090, 24 GB, driver 550.54.14"


@posix_only
def test_detect_gpu_absent_or_failing(no_gpu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_gpu() is None
    failing = _script(tmp_path / "failbin", "nvidia-smi", 'echo "NVIDIA-SMI has failed" >&2; exit 9').parent
    monkeypatch.setenv("PATH", str(failing))
    assert detect_gpu() is None


def test_parse_nvidia_smi_several_gpus_and_garbage() -> None:
    gpu = parse_nvidia_smi(
        "NVIDIA A100-SXM4-40GB, 535.104.05, 40960 MiB\nNVIDIA A100-SXM4-40GB, 535.104.05, 40960 MiB\n"
    )
    assert gpu is not None and gpu.count == 2 and gpu.memory_mib == 40960
    assert gpu.describe().startswith("2 x NVIDIA A100")
    assert parse_nvidia_smi("No devices were found\n") is None
    assert parse_nvidia_smi("Tesla T4, 470.82, [N/A]").memory_mib is None


def test_choose_torch_texts() -> None:
    gpu = GpuInfo("NVIDIA RTX 4090", "550", 24564)
    cuda = choose_torch(gpu, platform="linux")
    assert cuda.build == "cuda" and cuda.index_url is None
    assert cuda.reason.startswith(
        f"NVIDIA RTX 4090 found (driver 550): installing the CUDA build of torch {TORCH_VERSION}"
    )
    assert "about 2.5 GB download; the environment takes about 6 GB of disk" in cuda.reason
    assert cuda.pip_args() == [f"torch=={TORCH_VERSION}"]

    cpu = choose_torch(None, platform="linux")
    assert cpu.build == "cpu" and cpu.index_url == CPU_INDEX_URL
    assert cpu.reason == (
        f"No NVIDIA GPU found: installing the CPU build of torch {TORCH_VERSION} (about 200 MB download; the "
        "environment takes about 1.9 GB of disk)."
    )  # the environment is 1.9 GB (torch alone 754 MB), not "about 200 MB"
    assert cpu.needs_bytes >= 1.9e9
    assert cpu.pip_args() == [f"torch=={TORCH_VERSION}", "--index-url", "https://download.pytorch.org/whl/cpu"]

    windows = choose_torch(gpu, platform="win32")  # PyPI's Windows wheel has no CUDA: say so
    assert windows.build == "cpu" and "CPU-only" in windows.reason
    assert choose_torch(None, platform="darwin").build == "default"


# ---------------------------------------------------------------- interpreters, folders, steps


def test_find_base_python_and_probe(base_python: Path, tmp_path: Path) -> None:
    info = probe_python(base_python)
    assert info is not None and info.has_venv and info.suitable
    assert info.version[:2] == sys.version_info[:2]
    old = _script(tmp_path, "python3.9", """echo '{"version": [3, 9, 18], "executable": "x", "venv": true}'""")
    old_info = probe_python(old)
    assert old_info is not None and old_info.version == (3, 9, 18) and not old_info.suitable
    assert "needs Python 3.11 to 3.13" in old_info.describe()
    assert probe_python(tmp_path / "missing") is None
    assert find_base_python([old, tmp_path / "missing"]) is None
    found = find_base_python([old, base_python])
    assert found is not None and found.path == base_python
    assert find_base_python() is not None  # this machine has one (the Makefile builds .venv/backend from it)


def test_default_backend_dir() -> None:
    assert default_backend_dir() == Path(QgsApplication.qgisSettingsDirPath()) / "regionlens" / "venv"


def test_check_target_dir(tmp_path: Path) -> None:
    assert check_target_dir(tmp_path / "new" / "venv") is None
    (tmp_path / "empty").mkdir()
    assert check_target_dir(tmp_path / "empty") is None
    (tmp_path / "oldvenv").mkdir()
    (tmp_path / "oldvenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert check_target_dir(tmp_path / "oldvenv") is None
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.docx").write_text("precious")
    assert "already holds other files" in check_target_dir(tmp_path / "busy")
    assert "is a file" in check_target_dir(tmp_path / "busy" / "thesis.docx")
    assert check_target_dir("relative/venv") is not None
    assert check_target_dir("  ") is not None


def test_read_requirements_drops_torch(tmp_path: Path) -> None:
    req = tmp_path / "req.txt"
    req.write_text("# comment\nTorch >= 2.0  # pinned elsewhere\n\ntorchvision==0.1\nscikit_learn==1.0\n-r other.txt\n")
    assert read_requirements(req) == ["torchvision==0.1", "scikit_learn==1.0"]


def test_install_steps_argv(repo_root: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = str(venv_python(venv))
    requirements = repo_root / "requirements" / "backend.txt"
    steps = install_steps("/opt/python3.12", venv, choose_torch(None, "linux"), requirements)
    assert len(steps) == 7
    check, create, pip, torch, packages, torch_check, verify = steps
    assert check[:3] == ["/opt/python3.12", "-I", "-c"]
    assert create == ["/opt/python3.12", "-m", "venv", str(venv)]
    assert pip[:4] == [python, "-m", "pip", "install"] and pip[-2:] == ["--upgrade", "pip"]
    assert torch[:4] == [python, "-m", "pip", "install"]
    assert torch[-3:] == [f"torch=={TORCH_VERSION}", "--index-url", CPU_INDEX_URL]
    assert "geopandas==1.2.0" in packages and "scikit-learn==1.9.1" in packages
    assert not [arg for arg in packages if arg.lower().startswith("torch")]
    assert torch_check[:2] == [python, "-c"]
    assert verify == [python, "-m", "backend.encoders", "check"]

    cuda = install_steps("/opt/python3.12", venv, choose_torch(GpuInfo("RTX", "550"), "linux"), requirements)
    assert cuda[3][-1] == f"torch=={TORCH_VERSION}" and "--index-url" not in cuda[3]

    plan = install_plan("/opt/python3.12", venv, choose_torch(None, "linux"), requirements)
    assert [step.title for step in plan][:4] == [
        "Checking the Python interpreter", "Creating the environment", "Updating the package installer (pip)",
        "Installing PyTorch (CPU build, about 200 MB to download)",
    ]  # plain steps for the progress list
    assert plan[-1].cwd == repo_root  # `-m backend.encoders` imports from the plugin folder
    assert plan[-1].env["HF_HUB_OFFLINE"] == "1"


@posix_only
def test_base_python_check_step_rejects_old_python(tmp_path: Path, repo_root: Path, base_python: Path) -> None:
    """The first step fails in a second, with a clear message, for an unsuitable base interpreter."""
    plan = install_plan(
        base_python, tmp_path / "v", choose_torch(None, "linux"), repo_root / "requirements/backend.txt"
    )
    done = subprocess.run(plan[0].argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "Python 3." in done.stdout
    fake_old = plan[0].argv[-1].replace("v = sys.version_info[:2]", "v = (3, 9)")
    done = subprocess.run([str(base_python), "-c", fake_old], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "needs Python 3.11 to 3.13" in done.stderr


# ---------------------------------------------------------------- the install task


def test_install_task_success_stores_setting(base_python: Path, tmp_path: Path, qtbot) -> None:
    venv = tmp_path / "profile" / "regionlens" / "venv"
    Setting.BACKEND_PYTHON.set("")
    lines: list[str] = []
    steps = [InstallStep("Create", _cheap_venv(base_python, venv)), [venv_python(venv), "-c", "print('ok')"]]  # Path ok
    task = BackendInstallTask(venv, steps)
    task.logLine.connect(lines.append)
    outcome = _run(task, qtbot)
    assert isinstance(outcome, InstallSucceeded), outcome
    assert outcome.python == venv_python(venv) and outcome.python.is_file()
    assert (venv / "pyvenv.cfg").is_file()
    assert Setting.BACKEND_PYTHON.get() == str(venv_python(venv))
    qtbot.waitUntil(lambda: "ok" in lines)  # queued to the GUI thread
    assert lines[0] == "[1/2] Create"  # (the task manager deletes the task once it has finished)


def test_install_task_failure_reports_step_and_output(base_python: Path, tmp_path: Path, qtbot) -> None:
    venv = tmp_path / "new" / "venv"
    Setting.BACKEND_PYTHON.set("before")
    failing = [str(base_python), "-c", "import sys\nfor i in range(50): print('line', i)\nprint('boom')\nsys.exit(1)"]
    task = BackendInstallTask(
        venv, [InstallStep("Create", _cheap_venv(base_python, venv)), InstallStep("Fail", failing)]
    )
    outcome = _run(task, qtbot)
    assert isinstance(outcome, InstallFailed)
    assert outcome.step == "Fail" and outcome.returncode == 1
    assert "Step 2 of 2, \u201cFail\u201d, failed (exit 1)" in outcome.message
    assert outcome.output.splitlines()[-1] == "boom" and "line 0" not in outcome.output  # only the last lines
    assert not (tmp_path / "new").exists()  # the folders it created are gone
    assert Setting.BACKEND_PYTHON.get() == "before"


def test_install_task_missing_program(tmp_path: Path, qtbot) -> None:
    outcome = _run(BackendInstallTask(tmp_path / "v", [InstallStep("Run", [str(tmp_path / "no-such-python")])]), qtbot)
    assert isinstance(outcome, InstallFailed) and outcome.returncode == 127 and "Cannot start" in outcome.message


@posix_only
def test_install_task_cancel_stops_step_and_removes_folder(base_python: Path, tmp_path: Path, qtbot) -> None:
    venv = tmp_path / "venv"
    steps = [InstallStep("Create", _cheap_venv(base_python, venv)), InstallStep("Wait", [SLEEP, "30"])]
    task = BackendInstallTask(venv, steps, terminate_grace=2.0)
    outcomes: list = []
    task.on_finished = outcomes.append
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: task.current_step == "Wait" and task._proc is not None, timeout=30_000)
    pid = task._proc.pid
    assert venv.is_dir()
    started = time.monotonic()
    task.cancel()
    qtbot.waitUntil(lambda: bool(outcomes), timeout=10_000)
    assert time.monotonic() - started < 5
    assert isinstance(outcomes[0], InstallCancelled)
    assert not venv.exists()
    with pytest.raises(ProcessLookupError):  # the sleep is gone (and reaped)
        os.kill(pid, 0)


def test_install_task_never_deletes_existing_folders(base_python: Path, tmp_path: Path, qtbot) -> None:
    fail = InstallStep("Fail", [str(base_python), "-c", "raise SystemExit(3)"])

    existing = tmp_path / "existing-venv"  # an environment being updated: left as it is
    existing.mkdir()
    (existing / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (existing / "marker.txt").write_text("keep me")
    outcome = _run(BackendInstallTask(existing, [fail]), qtbot)
    assert isinstance(outcome, InstallFailed) and outcome.returncode == 3
    assert (existing / "marker.txt").read_text() == "keep me"

    empty = tmp_path / "empty"  # was empty: kept, and only what the task put there is removed
    empty.mkdir()
    outcome = _run(BackendInstallTask(empty, [InstallStep("Create", _cheap_venv(base_python, empty)), fail]), qtbot)
    assert isinstance(outcome, InstallFailed)
    assert empty.is_dir() and not any(empty.iterdir())

    busy = tmp_path / "busy"  # other files: refused before any step runs
    busy.mkdir()
    (busy / "thesis.docx").write_text("precious")
    outcome = _run(BackendInstallTask(busy, [InstallStep("Create", _cheap_venv(base_python, busy))]), qtbot)
    assert isinstance(outcome, InstallFailed) and outcome.step == "Check the target folder"
    assert sorted(p.name for p in busy.iterdir()) == ["thesis.docx"]


# ---------------------------------------------------------------- the setup dialog


@posix_only
def test_setup_dialog_shows_choice_and_runs_injected_steps(
    fake_gpu: Path, base_python: Path, tmp_path: Path, qtbot
) -> None:
    calls: list[tuple] = []

    def cheap_steps(base: Path, venv: Path, torch) -> list[InstallStep]:
        calls.append((base, venv, torch.build))
        return [InstallStep("Create", _cheap_venv(base, venv)), [str(venv_python(venv)), "-c", "print('hello')"]]

    target = tmp_path / "backend"
    dialog = SetupDialog(make_steps=cheap_steps, target_dir=target)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.detected, timeout=30_000)
    assert "NVIDIA GeForce RTX 4090" in dialog.gpu_label.text()
    assert "installing the CUDA build of torch" in dialog.reason_label.text()
    assert dialog.base_python()  # a base interpreter was found (or chosen before)
    dialog.python_widget.setFilePath(str(base_python))
    dialog.torch_combo.setCurrentIndex(dialog.torch_combo.findData("cpu"))  # the user overrides the choice
    assert "CPU build" in dialog.reason_label.text()
    assert dialog.install_button.isEnabled() and not dialog.cancel_button.isEnabled()

    ready: list[str] = []
    dialog.backendReady.connect(ready.append)
    dialog.install_button.click()
    assert dialog.running and dialog.cancel_button.isEnabled() and not dialog.install_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.outcome is not None, timeout=30_000)
    assert isinstance(dialog.outcome, InstallSucceeded)
    assert calls == [(base_python, target, "cpu")]
    log = dialog.log_view.toPlainText()
    assert "CPU build of torch" in log and "hello" in log and "[2/2]" in log
    steps = dialog.steps_view.toPlainText()  # plain steps; the raw output stays behind "Details"
    assert "1/2  Create\u2026" in steps and steps.rstrip().endswith("Done: the backend is ready.")
    assert "hello" not in steps.splitlines() and not [line for line in steps.splitlines() if line.startswith("$ ")]
    assert dialog.log_view.isHidden()
    dialog.details_button.click()
    assert not dialog.log_view.isHidden()
    assert dialog.progress.value() == 100
    assert "The backend is ready" in dialog.status_label.text()
    assert ready == [str(venv_python(target))]
    assert Setting.BACKEND_PYTHON.get() == str(venv_python(target))
    assert not dialog.running and not dialog.install_button.isEnabled()  # installed: no second install
    assert dialog.install_button.text() == "Installed"


def test_setup_dialog_checks_free_disk_space(no_gpu: None, base_python: Path, tmp_path: Path, qtbot,
                                             monkeypatch) -> None:  # fmt: skip
    monkeypatch.setattr(environment, "free_bytes", lambda _path: int(0.5e9))
    dialog = SetupDialog(make_steps=lambda *_args: [], target_dir=tmp_path / "backend")
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.detected, timeout=30_000)
    dialog.python_widget.setFilePath(str(base_python))
    assert dialog.start_install() is None and not dialog.running
    text = dialog.status_label.text()
    assert text.startswith("Not enough free disk space for the backend: it needs about 2.9 GB")
    assert "only 0.5 GB are free" in text
    assert not (tmp_path / "backend").exists()


def test_options_page_says_what_a_planner_does() -> None:
    from qgis.PyQt.QtWidgets import QLabel

    page = RegionLensOptionsPage()
    texts = " ".join(label.text() for label in page.findChildren(QLabel))
    assert "python -m backend" not in texts and "CONFIG" not in texts
    assert "Open run results" in texts
    page.deleteLater()


@posix_only
def test_setup_dialog_refuses_busy_folder_and_cancels(no_gpu: None, base_python: Path, tmp_path: Path, qtbot) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")

    def slow_steps(base: Path, venv: Path, torch) -> list[InstallStep]:
        return [InstallStep("Create", _cheap_venv(base, venv)), InstallStep("Wait", [SLEEP, "30"])]

    dialog = SetupDialog(make_steps=slow_steps, target_dir=busy)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.detected, timeout=30_000)
    assert "No NVIDIA GPU found" in dialog.gpu_label.text()
    assert dialog.reason_label.text().startswith("No NVIDIA GPU found: installing the CPU build")
    dialog.python_widget.setFilePath(str(base_python))
    assert dialog.start_install() is None
    assert "already holds other files" in dialog.status_label.text()

    dialog.folder_widget.setFilePath(str(tmp_path / "fresh"))
    task = dialog.start_install()
    assert task is not None
    qtbot.waitUntil(lambda: task.current_step == "Wait", timeout=30_000)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: dialog.outcome is not None, timeout=10_000)
    assert isinstance(dialog.outcome, InstallCancelled)
    assert not (tmp_path / "fresh").exists()
    assert "cancelled" in dialog.status_label.text()


# ---------------------------------------------------------------- options page


def test_options_page_tests_the_real_backend(backend_python: Path, qtbot, monkeypatch) -> None:
    jobs: list[tuple[str, dict]] = []  # what the plugin's one worker runner was asked (the page has no other way)
    runner = tasks.run_worker_job

    def recorded(python: Path, action: str, params: dict, **kwargs):  # noqa: ANN202
        jobs.append((action, params))
        return runner(python, action, params, **kwargs)

    monkeypatch.setattr(tasks, "run_worker_job", recorded)
    page = RegionLensOptionsPage()
    qtbot.addWidget(page)
    page.python_widget.setFilePath(str(backend_python))
    assert page.automatic_label.text() == f"Uses {backend_python}."
    page.test_backend()
    assert page.testing  # the worker starts in the background; the GUI thread is free
    qtbot.waitUntil(lambda: not page.testing, timeout=120_000)
    assert jobs == [("info", {})]
    assert page.last_error is None, page.result_label.text()
    text = page.result_label.text()
    assert "Device: cpu" in text and "Methods: baseline" in text and "torch 2.13.0" in text
    assert "CUDA devices: none" in text
    assert page.last_info["device"] == "cpu"
    qtbot.waitUntil(lambda: "NVIDIA GPU:" in page.gpu_label.text() and "looking" not in page.gpu_label.text())


@posix_only
def test_options_page_reports_a_broken_backend(tmp_path: Path, qtbot) -> None:
    page = RegionLensOptionsPage()
    qtbot.addWidget(page)
    page.python_widget.setFilePath(str(tmp_path / "nowhere" / "python"))
    assert "does not exist" in page.automatic_label.text()
    page.test_backend()
    qtbot.waitUntil(lambda: not page.testing, timeout=30_000)
    assert "does not exist" in page.last_error and page.last_info is None

    broken = _script(tmp_path, "python", "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1")
    page.python_widget.setFilePath(str(broken))
    page.test_backend()
    qtbot.waitUntil(lambda: not page.testing, timeout=30_000)
    assert page.last_error.startswith("The backend did not work: the worker stopped unexpectedly (exit 1)")
    assert "No module named 'torch'" in page.details_view.toPlainText()
    assert not page.details_view.isHidden()


def test_options_page_apply_and_automatic(backend_python: Path, repo_root: Path, qtbot) -> None:
    Setting.BACKEND_PYTHON.set("")
    page = RegionLensOptionsPage(plugin_root=repo_root)
    qtbot.addWidget(page)
    assert page.configured_python() == ""
    assert page.automatic_label.text() == f"Automatic: uses {backend_python}."  # the development checkout
    assert page.effective_python() == backend_python
    page.python_widget.setFilePath("/opt/my-backend/bin/python")
    page.apply()
    assert Setting.BACKEND_PYTHON.get() == "/opt/my-backend/bin/python"
    page.python_widget.setFilePath("")
    page.apply()
    assert Setting.BACKEND_PYTHON.get() == ""


def test_options_factory_creates_page(qtbot) -> None:
    opened: list[bool] = []
    factory = RegionLensOptionsFactory(open_setup=lambda: opened.append(True))
    assert factory.title() == "RegionLens"
    assert not factory.icon().isNull()
    page = factory.createWidget(None)
    qtbot.addWidget(page)
    assert isinstance(page, RegionLensOptionsPage)
    page.setup_button.click()
    assert opened == [True]


# ---------------------------------------------------------------- first use and the plugin


def test_ensure_backend(qgis_iface, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, qtbot) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    monkeypatch.setattr(first_use, "find_backend_python", lambda root=None: tmp_path / "python")
    assert plugin.ensure_backend() is True
    assert first_use.setup_dialog() is None

    monkeypatch.setattr(first_use, "find_backend_python", lambda root=None: None)
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    try:
        assert plugin.ensure_backend() is False
        dialog = first_use.setup_dialog()
        assert dialog is not None and dialog.isVisible()
        assert any("not set up yet" in message for message in bar.get_messages(Qgis.MessageLevel.Info))
        assert plugin.ensure_backend() is False
        assert first_use.setup_dialog() is dialog  # one dialog per session
        qtbot.waitUntil(lambda: dialog.detected, timeout=30_000)
    finally:
        first_use.close_setup_dialog()
    assert first_use.setup_dialog() is None


def test_init_gui_registers_options_page(qgis_iface) -> None:
    if not hasattr(qgis_iface, "registerOptionsWidgetFactory"):
        pytest.skip("this QgisInterface stub has no registerOptionsWidgetFactory")
    register = qgis_iface.registerOptionsWidgetFactory
    unregister = qgis_iface.unregisterOptionsWidgetFactory
    register.reset_mock()
    unregister.reset_mock()
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    factory = plugin.options_factory
    try:
        assert isinstance(factory, RegionLensOptionsFactory)
        register.assert_called_once_with(factory)
        assert plugin.setup_action is not None and plugin.setup_action in plugin.actions
        assert plugin.setup_action.text() == "Set up backend\u2026"
    finally:
        plugin.unload()
    unregister.assert_called_once_with(factory)
    assert plugin.options_factory is None
