"""RegionLens QGIS side: menus, background tasks, the backend worker client and result styling.

Everything here runs inside QGIS's own Python. It never imports torch, geopandas or anything from
``backend/``: training runs in a separate process (``python -m backend.worker`` of the backend virtual
environment), driven by :mod:`.worker_client` through JSON lines (see ``docs/protocol.md``).

Modules:
    main: the plugin class QGIS loads (toolbar, Plugins menu).
    worker_client: start, drive, cancel and kill the backend worker process.
    tasks: ``RunTask`` (a ``QgsTask``) with its parameters and result classes.
    parameters: ``RunChoices`` (what the run dock holds), ``validate``, ``to_run_config``, the method registry.
    input_export: export the chosen vector layers to GeoPackages beside the results folder.
    project_settings: the run dock's choices stored in the QGIS project.
    ui: the run dock, the metrics table, message-bar items with "Details".
    results: load a run's GeoPackage as styled, file-backed layers in a layer group.
    styling: renderers for clusters, predictions, residuals and embeddings.
    sample_data: add the bundled San Francisco sample city to the project.
    settings: the plugin's settings keys and defaults.
    render_demo: headless rendering of a run's outputs to PNGs and a project file.
"""
