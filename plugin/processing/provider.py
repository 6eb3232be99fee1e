"""The RegionLens Processing provider (id ``regionlens``)."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsProcessingProvider
from qgis.PyQt import sip
from qgis.PyQt.QtGui import QIcon

from ..tasks import PLUGIN_ROOT
from ..worker_client import find_backend_python
from ._base import ICON_PATH, ensure_methods
from .cluster import ClusterAlgorithm
from .embed import EmbedAlgorithm
from .predict import PredictAlgorithm
from .similar import SimilarAlgorithm

__all__ = ["PROVIDER_ID", "RegionLensProvider"]

PROVIDER_ID = "regionlens"


class RegionLensProvider(QgsProcessingProvider):
    """Provides ``regionlens:embed``, ``regionlens:cluster``, ``regionlens:predict`` and ``regionlens:similar``."""

    def __init__(self) -> None:
        super().__init__()
        self._info_task = None  # the background ``info`` request, while it runs

    def id(self) -> str:
        """Provider id, the prefix of the algorithm ids."""
        return PROVIDER_ID

    def name(self) -> str:
        """Name shown in the toolbox."""
        return "RegionLens"

    def longName(self) -> str:  # noqa: N802 - QGIS API
        """Longer name shown in tooltips."""
        return "RegionLens region embeddings"

    def icon(self) -> QIcon:
        """The RegionLens icon."""
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:  # noqa: N802 - QGIS API
        """Path of the SVG icon (used by the modeler and qgis_process)."""
        return str(ICON_PATH)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        """Add the algorithms, offering the methods the backend describes (:func:`._base.ensure_methods`).

        Headless (``qgis_process``, scripts) a backend that was never asked is asked now; in QGIS desktop it
        is asked in the background and the toolbox is refreshed when it answers.
        """
        desktop = QgsApplication.instance() is not None and QgsApplication.instance().platform() == "desktop"
        if not ensure_methods(wait=not desktop) and desktop:
            self._ask_in_background()
        for algorithm in (EmbedAlgorithm(), ClusterAlgorithm(), PredictAlgorithm(), SimilarAlgorithm()):
            self.addAlgorithm(algorithm)

    def _ask_in_background(self) -> None:
        from ..ui.backend_info import BackendInfoTask

        python = find_backend_python(PLUGIN_ROOT)
        if python is None or self._info_task is not None:
            return
        self._info_task = BackendInfoTask(python, on_finished=self._answered)
        QgsApplication.taskManager().addTask(self._info_task)

    def _answered(self, info: dict | None, _error: str) -> None:
        self._info_task = None
        if info is not None and not sip.isdeleted(self):
            self.refreshAlgorithms()
