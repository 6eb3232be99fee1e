"""RegionLens QGIS plugin entry point (the repository root is the plugin folder)."""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """Return the plugin instance QGIS loads."""
    from .plugin.main import RegionLensPlugin

    return RegionLensPlugin(iface)
