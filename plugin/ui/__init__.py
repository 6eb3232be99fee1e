"""RegionLens widgets: the run dock, the metrics table, message-bar messages with details.

Modules:
    run_dock: ``RunDock``, the dock a planner sets a run up in (inputs, labels, methods, output).
    method_widgets: one checkable section per method with its parameters ("Advanced", collapsed).
    backend_info: ``BackendInfoTask``, asks the backend which methods it offers, in the background.
    metrics_dialog: ``MetricsDialog``, the run's ``metrics``: a leaderboard summary, the full table a tab away.
    leaderboard: the summary tab (best method per label, clear lead or not) and the R2 bar chart.
    cluster_card: ``ClusterCardDialog``, one cluster's size, defining features and example regions; rename.
    messages: message-bar items with a "Details" button, and the details dialog.
"""

__all__ = ["backend_info", "cluster_card", "leaderboard", "messages", "method_widgets", "metrics_dialog", "run_dock"]
