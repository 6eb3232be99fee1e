"""Backend setup: first use, the setup dialog and the "RegionLens" page of Settings › Options.

Modules:
    environment: GPU detection (nvidia-smi), torch build choice, base interpreter, install commands (pure Python).
    installer: ``BackendInstallTask``, the QgsTask that runs the install commands with a log and cancel.
    dialog: ``SetupDialog``, what the user sees while the backend is created.
    options_page: ``RegionLensOptionsFactory`` / ``RegionLensOptionsPage`` (path, device, "Test backend").
    first_use: ``ensure_backend``: is there a backend? if not, open the setup dialog.
    background: ``BackgroundCall``, a short blocking call in a thread with its result as a Qt signal.
"""

from .dialog import SetupDialog
from .first_use import close_setup_dialog, ensure_backend, setup_dialog, show_setup_dialog
from .options_page import RegionLensOptionsFactory

__all__ = [
    "RegionLensOptionsFactory",
    "SetupDialog",
    "close_setup_dialog",
    "ensure_backend",
    "setup_dialog",
    "show_setup_dialog",
]
