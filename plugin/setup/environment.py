"""What the backend setup needs to know about this machine, and the commands that build the backend.

Pure Python (no Qt), so every decision here is testable without QGIS:

- :func:`detect_gpu` asks ``nvidia-smi`` for an NVIDIA GPU;
- :func:`choose_torch` picks the torch build (CUDA from PyPI when there is an NVIDIA GPU on Linux, the
  CPU build from the PyTorch CPU index otherwise) and says why, in one sentence for the user;
- :func:`find_base_python` finds an interpreter to create the virtual environment from;
- :func:`install_plan` / :func:`install_steps` list the commands: create the venv, upgrade pip,
  install torch, install ``requirements/backend.txt`` without its torch line, check the result.

Why not QGIS's own Python: on Linux it is the system ``/usr/bin/python3`` and fine as a *base* (the
venv is separate), but on Windows (OSGeo4W) and macOS the Python bundled with QGIS often lacks
``venv``/``ensurepip`` or links against QGIS's own libraries, so the setup looks for a standalone
Python (python.org, the ``py`` launcher, Homebrew) and lets the user pick one.

:func:`qgis_settings_dir` is the only function that touches QGIS (lazily), for
:func:`default_backend_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404 # runs nvidia-smi and probes interpreters: explicit argv, no shell
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..worker_client import TEXT_OUTPUT, build_worker_env, venv_python

__all__ = [
    "CPU_INDEX_URL",
    "ENVIRONMENT_GB",
    "MAX_PYTHON",
    "MIN_PYTHON",
    "TORCH_VERSION",
    "GpuInfo",
    "InstallStep",
    "PythonInfo",
    "TorchChoice",
    "automatic_backend_python",
    "base_python_candidates",
    "check_free_space",
    "check_target_dir",
    "choose_torch",
    "cpu_torch",
    "cuda_torch",
    "default_backend_dir",
    "detect_gpu",
    "find_base_python",
    "free_bytes",
    "install_plan",
    "install_steps",
    "parse_nvidia_smi",
    "probe_python",
    "qgis_settings_dir",
    "read_requirements",
]

#: The torch release the backend is tested with (requirements/backend.txt pins the same).
TORCH_VERSION = "2.13.0"
#: Download of the torch wheel per build (PyPI's CUDA build pulls NVIDIA's CUDA libraries too).
TORCH_DOWNLOAD = {"cpu": "about 200 MB", "cuda": "about 2.5 GB", "default": "about 80 MB"}
#: The whole backend environment on disk per torch build, in GB (CPU build on Linux measured: 1.9 GB, of which
#: torch is 0.75 GB; the CUDA build adds NVIDIA's libraries).
ENVIRONMENT_GB = {"cpu": 1.9, "cuda": 6.0, "default": 1.5}
#: Extra free space the installation needs while it runs (pip's downloads and unpacking), in GB.
INSTALL_MARGIN_GB = 1.0
#: PyTorch's CPU-only wheel index (PyPI's Linux wheels are CUDA builds of several GB).
CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
#: Supported base interpreters, inclusive: the backend needs 3.11 (tomllib; numpy 2.4 and pandas 3
#: dropped 3.10), and 3.13 is the newest release every pinned package has wheels for.
MIN_PYTHON = (3, 11)
MAX_PYTHON = (3, 13)

_CHECK_BASE = (
    "import sys\n"
    "v = sys.version_info[:2]\n"
    "print('Python', sys.version.split()[0], 'at', sys.executable)\n"
    "if not {lo} <= v <= {hi}:\n"
    "    sys.exit('RegionLens needs Python {span} for its backend, not %d.%d.' % v)\n"
    "try:\n"
    "    import ensurepip, venv\n"
    "except ImportError:\n"
    "    sys.exit('This Python cannot create virtual environments (on Debian/Ubuntu: apt install python3-venv).')\n"
)
_CHECK_TORCH = "import torch; print('torch', torch.__version__, '- CUDA available:', torch.cuda.is_available())"
_NVIDIA_SMI_QUERY = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
_PROBE = (
    "import json, sys\n"
    "ok = True\n"
    "try:\n"
    "    import ensurepip, venv\n"
    "except ImportError:\n"
    "    ok = False\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable, 'venv': ok}))\n"
)


# ---------------------------------------------------------------------------- GPU and torch build


@dataclass(frozen=True)
class GpuInfo:
    """The first NVIDIA GPU ``nvidia-smi`` reports."""

    name: str  # e.g. "NVIDIA GeForce RTX 4090"
    driver: str  # driver version, e.g. "550.54.14"
    memory_mib: int | None = None  # total memory in MiB (None when nvidia-smi did not say)
    count: int = 1  # number of NVIDIA GPUs found

    def describe(self) -> str:
        """One line for the user, e.g. ``"NVIDIA GeForce RTX 4090, 24 GB, driver 550.54.14"``."""
        parts = [self.name if self.count == 1 else f"{self.count} x {self.name}"]
        if self.memory_mib:
            parts.append(f"{self.memory_mib / 1024:.0f} GB")
        parts.append(f"driver {self.driver}")
        return ", ".join(parts)


@dataclass(frozen=True)
class TorchChoice:
    """Which torch build to install, from where, and why."""

    build: str  # "cpu", "cuda" or "default" (macOS: PyPI's wheel, CPU plus Apple MPS)
    requirement: str  # pip requirement, e.g. "torch==2.13.0"
    index_url: str | None  # pip --index-url (None: PyPI)
    size: str  # approximate download of torch, e.g. "about 200 MB"
    reason: str  # a sentence for the user: what was found and what gets installed
    disk_gb: float = 1.9  # the whole environment on disk (torch, geopandas, models, ...), in GB

    @property
    def needs_bytes(self) -> int:
        """Free space the installation needs: the environment plus room for pip's downloads and unpacking."""
        return int((self.disk_gb + INSTALL_MARGIN_GB) * 1e9)

    @property
    def title(self) -> str:
        """The installation step that installs this build, in plain words."""
        words = {"cpu": "CPU build", "cuda": "CUDA build for the NVIDIA GPU", "default": "standard build"}
        return f"Installing PyTorch ({words.get(self.build, self.build)}, {self.size} to download)"

    def pip_args(self) -> list[str]:
        """Arguments after ``pip install`` that install this build."""
        args = [self.requirement]
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args


def parse_nvidia_smi(output: str) -> GpuInfo | None:
    """Parse ``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader``.

    Args:
        output: Its standard output, one line per GPU, e.g. ``"NVIDIA A100, 535.104.05, 40960 MiB"``.

    Returns:
        The first GPU (with the number of GPUs), or ``None`` when no line parses.
    """
    rows = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) >= 2 and cells[0] and cells[1]:
            rows.append(cells)
    if not rows:
        return None
    first = rows[0]
    memory = None
    if len(first) >= 3:
        number = first[2].split()[0] if first[2].split() else ""
        memory = int(number) if number.isdigit() else None
    return GpuInfo(name=first[0], driver=first[1], memory_mib=memory, count=len(rows))


def _nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    if os.name == "nt":  # older Windows drivers install it outside PATH
        system_root = Path(os.environ.get("SystemRoot", r"C:\Windows"))
        program_files = Path(os.environ.get("ProgramFiles", r"C:\Program Files"))
        for candidate in (
            system_root / "System32" / "nvidia-smi.exe",
            program_files / "NVIDIA Corporation" / "NVSMI" / "nvidia-smi.exe",
        ):
            if candidate.is_file():
                return str(candidate)
    return None


def detect_gpu(timeout: float = 10.0) -> GpuInfo | None:
    """Ask ``nvidia-smi`` for an NVIDIA GPU.

    Args:
        timeout: Seconds to wait for ``nvidia-smi``.

    Returns:
        The GPU, or ``None`` when ``nvidia-smi`` is absent, fails, times out or lists no GPU.
    """
    exe = _nvidia_smi()
    if exe is None:
        return None
    try:
        # Explicit argv, no shell; the executable is the nvidia-smi found on PATH.
        done = subprocess.run(  # nosec B603
            [exe, *_NVIDIA_SMI_QUERY],
            capture_output=True,
            timeout=timeout,
            env=build_worker_env(),
            **TEXT_OUTPUT,
            **_no_window(),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return parse_nvidia_smi(done.stdout)


def _sizes(build: str) -> str:
    return f"{TORCH_DOWNLOAD[build]} download; the environment takes about {ENVIRONMENT_GB[build]:g} GB of disk"


def _choice(build: str, reason: str) -> TorchChoice:
    index = CPU_INDEX_URL if build == "cpu" else None
    return TorchChoice(build, f"torch=={TORCH_VERSION}", index, TORCH_DOWNLOAD[build], f"{reason} ({_sizes(build)}).",
                       ENVIRONMENT_GB[build])  # fmt: skip


def choose_torch(gpu: GpuInfo | None, platform: str | None = None) -> TorchChoice:
    """Pick the torch build for this machine.

    Args:
        gpu: What :func:`detect_gpu` found.
        platform: ``sys.platform`` (for tests).

    Returns:
        The CUDA build from PyPI on Linux with an NVIDIA GPU; on macOS PyPI's standard wheel (CPU and
        Apple's MPS); everywhere else the CPU build from the PyTorch CPU index. On Windows PyPI's wheel
        has no CUDA, so a Windows GPU still gets the CPU build and the reason says how to change that.
    """
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return _choice("default", f"macOS: installing the standard build of torch {TORCH_VERSION}, for the CPU "
                                  "and Apple's MPS GPU where available")  # fmt: skip
    if gpu is not None and platform.startswith("linux"):
        choice = _choice("cuda", f"{gpu.name} found (driver {gpu.driver}): installing the CUDA build of torch "
                                 f"{TORCH_VERSION}")  # fmt: skip
        return replace(choice, reason=choice.reason + " If torch later reports no CUDA, update the NVIDIA driver "
                       "or choose the CPU build.")  # fmt: skip
    if gpu is not None:
        choice = _choice("cpu", f"{gpu.name} found, but PyPI's Windows wheels of torch are CPU-only: installing the "
                                f"CPU build of torch {TORCH_VERSION}")  # fmt: skip
        return replace(choice, reason=choice.reason + " For the GPU, install a CUDA build from pytorch.org into "
                       "the backend environment afterwards.")  # fmt: skip
    return _choice("cpu", f"No NVIDIA GPU found: installing the CPU build of torch {TORCH_VERSION}")


def cpu_torch() -> TorchChoice:
    """The CPU build, chosen by the user (e.g. a GPU whose driver is too old for the CUDA build)."""
    choice = _choice("cpu", f"CPU build of torch {TORCH_VERSION} chosen")
    return replace(choice, reason=choice.reason + " Training runs on the processor.")


def cuda_torch() -> TorchChoice:
    """PyPI's CUDA build, chosen by the user (Linux; needs a recent NVIDIA driver)."""
    choice = _choice("cuda", f"CUDA build of torch {TORCH_VERSION} chosen")
    return replace(choice, reason=choice.reason + " It needs an NVIDIA GPU and a recent driver.")


def free_bytes(path: str | Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent folder)."""
    anchor = Path(path).expanduser()
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    return shutil.disk_usage(anchor).free


def check_free_space(path: str | Path, choice: TorchChoice) -> str | None:
    """Why the environment does not fit on the disk of ``path`` (a clear message), or ``None`` when it does."""
    try:
        free = free_bytes(path)
    except OSError:
        return None  # unknown: let the installation try (pip reports a full disk itself)
    need = choice.needs_bytes
    if free >= need:
        return None
    return (
        f"Not enough free disk space for the backend: it needs about {need / 1e9:.1f} GB (the environment, about "
        f"{choice.disk_gb:g} GB, and room for the downloads) but only {free / 1e9:.1f} GB are free on the disk of "
        f"{Path(path).expanduser()}. Free some space or choose a folder on another disk."
    )


# ---------------------------------------------------------------------------- interpreters and folders


@dataclass(frozen=True)
class PythonInfo:
    """What :func:`probe_python` learnt about an interpreter."""

    path: Path  # the interpreter as given (not resolved)
    version: tuple[int, int, int]  # sys.version_info[:3]
    has_venv: bool  # venv and ensurepip import (Debian: the python3-venv package)

    @property
    def suitable(self) -> bool:
        """A supported version with venv support."""
        return self.has_venv and MIN_PYTHON <= self.version[:2] <= MAX_PYTHON

    def describe(self) -> str:
        """e.g. ``"/usr/bin/python3 (Python 3.11.2)"`` plus what is wrong with it, if anything."""
        text = f"{self.path} (Python {'.'.join(map(str, self.version))})"
        if not self.has_venv:
            text += ": no venv/ensurepip (on Debian/Ubuntu: apt install python3-venv)"
        elif not self.suitable:
            text += f": needs Python {_version_range()}"
        return text


def _version_range() -> str:
    return f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} to {MAX_PYTHON[0]}.{MAX_PYTHON[1]}"


def _no_window() -> dict[str, int]:
    """Keep Windows from flashing a console for each subprocess."""
    return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if os.name == "nt" else {}


def probe_python(path: str | Path, timeout: float = 15.0) -> PythonInfo | None:
    """Run an interpreter once to learn its version and whether it can create virtual environments.

    Args:
        path: The interpreter.
        timeout: Seconds to wait.

    Returns:
        Its :class:`PythonInfo`, or ``None`` when it does not exist or does not run.
    """
    exe = Path(path)
    if not exe.is_file():
        return None
    try:
        # Explicit argv, no shell; ``-I`` ignores PYTHON* variables and the user's site-packages.
        done = subprocess.run(  # nosec B603
            [str(exe), "-I", "-c", _PROBE],
            capture_output=True,
            timeout=timeout,
            env=build_worker_env(),
            **TEXT_OUTPUT,
            **_no_window(),
        )
        data = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        major, minor, micro = (int(part) for part in data.get("version", [])[:3])
    except (TypeError, ValueError):
        return None
    return PythonInfo(path=exe, version=(major, minor, micro), has_venv=bool(data.get("venv")))


def base_python_candidates(platform: str | None = None) -> list[Path]:
    """Interpreters to try as the base of the backend venv, best first (only those that exist).

    Linux: ``/usr/bin/python3``, then ``python3.12``, ``python3.11``, ``python3.13``, ``python3`` on PATH.
    macOS: python.org and Homebrew installs, then PATH (never the Python inside QGIS.app).
    Windows: the ``py`` launcher's 3.12/3.11/3.13, then ``python`` on PATH (never OSGeo4W's Python).
    """
    platform = sys.platform if platform is None else platform
    versions = ("3.12", "3.11", "3.13")
    paths: list[Path] = []
    if platform.startswith("win"):
        paths += _py_launcher(versions)
        paths += [Path(p) for p in (shutil.which("python"), shutil.which("python3")) if p]
    else:
        if platform == "darwin":
            for v in versions:
                paths.append(Path(f"/Library/Frameworks/Python.framework/Versions/{v}/bin/python{v}"))
                paths += [Path(f"/opt/homebrew/bin/python{v}"), Path(f"/usr/local/bin/python{v}")]
        else:
            paths.append(Path("/usr/bin/python3"))
        paths += [Path(p) for name in [f"python{v}" for v in versions] + ["python3"] if (p := shutil.which(name))]
    unique: list[Path] = []
    for path in paths:
        bundled = any(word in str(path).lower() for word in ("qgis", "osgeo4w"))  # QGIS's own Python
        if path.is_file() and path not in unique and not bundled:
            unique.append(path)
    return unique


def _py_launcher(versions: Iterable[str]) -> list[Path]:
    launcher = shutil.which("py")
    if not launcher:
        return []
    found = []
    for v in versions:
        try:
            # Explicit argv, no shell: the Windows py launcher reports where Python <v> lives.
            done = subprocess.run(  # nosec B603
                [launcher, f"-{v}", "-c", "import sys; print(sys.executable)"],
                capture_output=True, text=True, timeout=15, env=build_worker_env(), **_no_window(),
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip():
            found.append(Path(done.stdout.strip().splitlines()[-1]))
    return found


def find_base_python(candidates: Sequence[str | Path] | None = None) -> PythonInfo | None:
    """The first suitable interpreter (Python 3.11 to 3.13 with venv support) to build the backend from.

    Args:
        candidates: Interpreters to try in order (default :func:`base_python_candidates`).

    Returns:
        Its :class:`PythonInfo` (``.path`` is the interpreter), or ``None`` when none is suitable: the
        user must install Python (python.org; on Debian/Ubuntu ``python3-venv``) or pick one.
    """
    for candidate in base_python_candidates() if candidates is None else candidates:
        info = probe_python(candidate)
        if info is not None and info.suitable:
            return info
    return None


def qgis_settings_dir() -> Path:
    """QGIS's profile folder (``QgsApplication.qgisSettingsDirPath()``)."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath())


def default_backend_dir() -> Path:
    """Where the setup creates the backend by default: ``<QGIS profile>/regionlens/venv`` (per user).

    :func:`plugin.worker_client.find_backend_python` looks there too.
    """
    return qgis_settings_dir() / "regionlens" / "venv"


def automatic_backend_python(plugin_root: str | Path) -> Path | None:
    """The interpreter RegionLens uses when the path setting is empty.

    The fallbacks of :func:`plugin.worker_client.find_backend_python`, same order: the development
    checkout's ``.venv/backend``, then the per-user :func:`default_backend_dir`.
    """
    for candidate in (venv_python(Path(plugin_root) / ".venv" / "backend"), venv_python(default_backend_dir())):
        if candidate.is_file():
            return candidate
    return None


def check_target_dir(path: str | Path) -> str | None:
    """Why the backend cannot be installed into ``path``, or ``None`` when it can.

    Allowed: a folder that does not exist yet, an empty folder, or an existing virtual environment
    (``pyvenv.cfg`` inside: it is updated in place). Anything else is refused, so that a mistyped
    path never fills (or, after a failure, empties) a folder holding other files.
    """
    if not str(path).strip():
        return "Choose the folder to install the backend into."
    target = Path(path).expanduser()
    if not target.is_absolute():
        return f"Use an absolute folder path, not {str(path)!r}."
    if not target.exists():
        return None
    if not target.is_dir():
        return f"{target} is a file, not a folder."
    if (target / "pyvenv.cfg").is_file() or not any(target.iterdir()):
        return None
    return f"{target} already holds other files; choose an empty or new folder."


# ---------------------------------------------------------------------------- install commands


@dataclass
class InstallStep:
    """One command of the installation."""

    title: str  # shown in the log and the progress text, e.g. "Install torch"
    argv: list[str]  # the command (explicit argv; never run through a shell)
    cwd: Path | None = None  # working directory (None: inherit)
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables


def read_requirements(requirements_file: str | Path, drop: Iterable[str] = ("torch",)) -> list[str]:
    """The requirement lines of a requirements file, without comments and without the ``drop`` packages.

    Args:
        requirements_file: e.g. ``requirements/backend.txt``.
        drop: Project names to leave out (compared case-insensitively, ``-``/``_`` alike).

    Raises:
        OSError: If the file cannot be read.
    """
    dropped = {_normalise(name) for name in drop}
    lines = []
    for raw in Path(requirements_file).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = line
        for separator in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", "@", " "):
            name = name.split(separator, 1)[0]
        if _normalise(name) not in dropped:
            lines.append(line)
    return lines


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def install_plan(
    base_python: str | Path,
    venv_dir: str | Path,
    torch_choice: TorchChoice,
    requirements_file: str | Path,
    plugin_root: str | Path | None = None,
) -> list[InstallStep]:
    """The steps that build the backend environment.

    0. check that ``base_python`` is Python 3.11 to 3.13 with venv support (fails in a second, with a
    clear message, instead of after the torch download); 1. create the venv; 2. upgrade pip; 3. install
    torch as ``torch_choice`` says; 4. install ``requirements_file`` without its torch line; 5. report
    torch's version and whether CUDA works; 6. ``python -m backend.encoders check`` with ``plugin_root``
    as working directory (loads the offline text and image models once).

    Args:
        base_python: Interpreter to create the venv from (see :func:`find_base_python`).
        venv_dir: The new environment's folder.
        torch_choice: From :func:`choose_torch`.
        requirements_file: ``requirements/backend.txt`` of the plugin (shipped in the plugin zip).
        plugin_root: The plugin folder (default: the parent of ``requirements_file``'s folder).

    Raises:
        OSError: If the requirements file cannot be read.
    """
    requirements_file = Path(requirements_file)
    root = Path(plugin_root) if plugin_root is not None else requirements_file.resolve().parent.parent
    python = str(venv_python(venv_dir))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    quiet_pip = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    check = _CHECK_BASE.format(lo=MIN_PYTHON, hi=MAX_PYTHON, span=_version_range())
    return [
        InstallStep("Checking the Python interpreter", [str(base_python), "-I", "-c", check]),
        InstallStep("Creating the environment", [str(base_python), "-m", "venv", str(venv_dir)]),
        InstallStep("Updating the package installer (pip)", [*pip, "--upgrade", "pip"], env=quiet_pip),
        InstallStep(torch_choice.title, [*pip, *torch_choice.pip_args()], env=quiet_pip),
        InstallStep(
            "Installing the other packages (geopandas, scikit-learn, sentence-transformers, \u2026)",
            [*pip, *read_requirements(requirements_file)], env=quiet_pip,
        ),  # fmt: skip
        InstallStep("Checking PyTorch", [python, "-c", _CHECK_TORCH]),
        InstallStep(
            "Checking the offline text and image models",
            [python, "-m", "backend.encoders", "check"],
            cwd=root,
            env={"HF_HUB_OFFLINE": "1"},
        ),
    ]


def install_steps(
    base_python: str | Path,
    venv_dir: str | Path,
    torch_choice: TorchChoice,
    requirements_file: str | Path,
    plugin_root: str | Path | None = None,
) -> list[list[str]]:
    """The argv of each step of :func:`install_plan` (the verify step runs with cwd = the plugin root)."""
    return [step.argv for step in install_plan(base_python, venv_dir, torch_choice, requirements_file, plugin_root)]
