"""A run's report: the leaderboard chart, maps of the primary method, the cluster cards and one HTML page.

:func:`write_report` reads only what a run folder holds (``run.json``, ``clusters.json``, ``figures/``), so it
can (re)write the report of any finished run; the pipeline calls it on the staging folder before the rename.
:func:`rewrite_report` brings a finished run's report up to date after its clusters were renamed (the QGIS
plugin's rename, through the worker's ``report`` job): the cluster map, then the page, each replaced atomically.
The page is self-contained: figures are embedded as base64 PNGs, the style is inline, nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.io.outputs import replace_atomically
from backend.tasks.leaderboard import leaderboard
from backend.viz.figures import _legend_text, _new_figure, _save
from regionlens_common import (
    CLUSTER_CARD_EXAMPLES,
    CLUSTER_CARD_FEATURES,
    CLUSTER_CARDS_JSON,
    CLUSTER_FIELD,
    CLUSTER_NAME_FIELD,
    GPKG_NAME,
    LAYER_CLUSTERS,
    LEADERBOARD_PNG,
    PRED,
    REPORT_HTML,
    RUN_JSON,
    cluster_colour,
)

__all__ = ["plot_leaderboard", "plot_cluster_map", "plot_prediction_maps", "rewrite_report", "write_cluster_cards",
           "write_report"]

#: The primary method's cluster map in a run's ``figures/``.
CLUSTER_MAP_PNG = "cluster_map.png"

_PROTOCOL_TITLES = {"shuffled": "shuffled K-fold", "spatial": "spatially blocked K-fold"}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(float(value))


def plot_leaderboard(rows: Sequence[Mapping[str, Any]], model: str, path: str | Path) -> Path | None:
    """Bar chart of R2 per method and label (bar: mean, error bar: std over repeats), one panel per protocol.

    Args:
        rows: The run's metric rows.
        model: The regressor shown (the one whose predictions the run writes).
        path: PNG to write.

    Returns:
        The path, or None when there are no scores of ``model``.
    """
    frame = pd.DataFrame([r for r in rows if r.get("model") == model])
    if frame.empty:
        return None
    labels = list(dict.fromkeys(frame["label"]))
    methods = list(dict.fromkeys(frame["method"]))
    protocols = [p for p in _PROTOCOL_TITLES if p in set(frame["protocol"])]
    fig = _new_figure(max(6.0, 1.2 * len(labels) * max(1, len(methods)) / 3 + 2), 3.2 * len(protocols) + 0.6)
    axes = fig.subplots(len(protocols), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(labels))
    for ax, protocol in zip(axes, protocols, strict=True):
        sub = frame[frame["protocol"] == protocol].set_index(["method", "label"])
        for i, method in enumerate(methods):
            means = [float(sub["r2_mean"].get((method, lab), np.nan)) for lab in labels]
            stds = [float(sub["r2_std"].get((method, lab), np.nan)) for lab in labels]
            stds = [s if math.isfinite(s) else 0.0 for s in stds]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                   color=cluster_colour(i), label=method)
        ax.axhline(0.0, color="#444444", linewidth=0.8)
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.set_ylabel("R\u00b2 (out of fold)")
        ax.set_title(f"{_PROTOCOL_TITLES[protocol]} ({model}); error bars: std over repeats", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=min(len(methods), 6), fontsize=8, loc="upper left", bbox_to_anchor=(0, 1.28 if
                   len(protocols) > 1 else 1.22), frameon=False)
    return _save(fig, path)


def plot_cluster_map(frame: Any, names: Mapping[int, str], path: str | Path, title: str) -> Path:
    """Map of the clusters (a GeoDataFrame with ``cluster``), coloured as in QGIS, named in the legend."""
    from matplotlib.patches import Patch

    fig = _new_figure(9.0, 6.5)
    ax = fig.add_subplot()
    clusters = frame[CLUSTER_FIELD].astype(int).to_numpy()
    frame.plot(ax=ax, color=[cluster_colour(c) for c in clusters], edgecolor="white", linewidth=0.2)
    sizes = np.bincount(clusters)
    handles = [Patch(color=cluster_colour(c), label=_legend_text(c, int(sizes[c]), names))
               for c in range(len(sizes)) if sizes[c]]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_prediction_maps(frame: Any, labels: Sequence[str], units: Mapping[str, str], path: str | Path,
                         title: str) -> Path | None:
    """One map per label of the out-of-fold predictions (``<label>_pred``): per km² for a label modelled as a
    density (a count map would show the region sizes), else in the label's units; colours span the 2nd to 98th
    percentile."""
    shown = [lab for lab in labels if f"{lab}{PRED}" in frame.columns]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = _new_figure(4.2 * cols, 3.6 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, lab in zip(axes, shown, strict=False):
        values = frame[f"{lab}{PRED}"].astype(float)
        density = "km\u00b2" in units.get(lab, "")
        if density:
            values = values / (frame.geometry.area.to_numpy() / 1e6)
        finite = values[np.isfinite(values)]
        vmin, vmax = (np.percentile(finite, [2, 98]) if len(finite) else (0.0, 1.0))
        frame.plot(ax=ax, column=values, cmap="viridis", vmin=vmin, vmax=vmax, legend=True,
                   legend_kwds={"shrink": 0.7}, missing_kwds={"color": "#dddddd"}, linewidth=0)
        ax.set_axis_off()
        ax.set_title(f"{lab}: predicted" + (" per km\u00b2" if density else ""), fontsize=9)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def write_cluster_cards(path: Path, clusters: Mapping[str, tuple[np.ndarray, dict[int, str], pd.DataFrame]],
                        embeddings: Mapping[str, pd.DataFrame], region_ids: Any) -> Path | None:
    """Write ``clusters.json``: every clustered method's cards (:func:`backend.tasks.clustering.cluster_cards`).

    Returns:
        The path, or None (nothing written) when no method has clusters.
    """
    from backend.tasks.clustering import cluster_cards

    cards = {name: cluster_cards(profiles, labels, names, embeddings[name].to_numpy(), region_ids,
                                 CLUSTER_CARD_FEATURES, CLUSTER_CARD_EXAMPLES)
             for name, (labels, names, profiles) in clusters.items()}
    if not cards:
        return None
    path.write_text(json.dumps(cards, indent=1), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{font-weight:600;background:#eef7ee}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.muted{color:#666;font-size:.9em}.card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;margin:.5em 0}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:2px;margin-right:.4em;vertical-align:middle}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "\u2013"


def _pm(mean: Any, std: Any) -> str:
    return f"{_num(mean)} \u00b1 {_num(std)}" if _finite(std) else _num(mean)


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}"><figcaption class="muted">' \
           f"{_esc(alt)}</figcaption></figure>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _inputs(manifest: Mapping[str, Any]) -> str:
    cfg = manifest.get("config", {})
    rows = []
    regions = cfg.get("regions") or {}
    rows.append(["regions", f"{Path(str(regions.get('path', ''))).name} (id field {regions.get('id_field', '')}; "
                 f"{manifest.get('n_regions', '?')} regions)"])
    if cfg.get("pois"):
        pois = cfg["pois"]
        rows.append(["POIs", f"{Path(str(pois.get('path', ''))).name} (category field {pois.get('category_field')})"])
    for r in cfg.get("rasters") or []:
        rows.append(["imagery", Path(str(r.get("path", ""))).name])
    for key, title in (("od", "OD flows"), ("landuse", "land use")):
        if cfg.get(key):
            rows.append([title, Path(str(cfg[key].get("path", ""))).name])
    units = manifest.get("label_units", {})
    for lab in cfg.get("labels") or []:
        source = lab.get("field") or f"points of {Path(str(lab.get('points', ''))).name}"
        modelled = units.get(lab.get("name"), lab.get("target"))
        rows.append([f"label {lab.get('name')}", f"{source}, modelled as {modelled}"])
    methods = ", ".join(f"{m.get('name')} (d = {m.get('dim')})" for m in cfg.get("methods") or [])
    rows.append(["methods", methods])
    rows.append(["views", ", ".join(manifest.get("views", []))])
    pred = cfg.get("prediction") or {}
    if pred:
        protocols = "shuffled and spatially blocked" if pred.get("spatial") else "shuffled"
        rows.append(["prediction", f"{', '.join(pred.get('models', []))}; {pred.get('folds')} folds x "
                     f"{pred.get('repeats')} repeats, {protocols}; {round(100 * float(pred.get('coverage', 0.9)))} % "
                     "CV+ intervals"])
    out = _table(["input", "what"], [[f"<td>{_esc(a)}</td>", f"<td>{_esc(b)}</td>"] for a, b in rows])
    notes = manifest.get("report") or []
    if notes:
        out += "<h3>Repaired, dropped or noted</h3><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"
    else:
        out += '<p class="muted">Nothing was repaired or dropped.</p>'
    return out


def _leaderboard(manifest: Mapping[str, Any]) -> str:
    cfg = manifest.get("config", {})
    model = (cfg.get("prediction") or {}).get("write_model", "ridge")
    board = leaderboard(manifest.get("metrics", []), model)
    if not board:
        return '<p class="muted">No labels were predicted.</p>'
    units = manifest.get("label_units", {})
    nominal = (cfg.get("prediction") or {}).get("coverage")
    parts = [f'<p class="muted">Regressor {_esc(model)}; R\u00b2 of the out-of-fold predictions, mean \u00b1 std over '
             f"repeats; coverage: the share of regions inside their CV+ interval (nominal {_num(nominal, 2)}). "
             "Ranked by the mean R\u00b2 over both protocols; a lead is <i>clear</i> when it exceeds the larger "
             "spread over repeats.</p>"]
    for label, entries in board.items():
        rows, classes = [], []
        for i, e in enumerate(entries):
            p = e["protocols"]
            sh, sp = p.get("shuffled", {}), p.get("spatial", {})
            rows.append([f"<td>{_esc(e['method'])}</td>",
                         f'<td class="num">{_pm(sh.get("r2_mean"), sh.get("r2_std"))}</td>',
                         f'<td class="num">{_pm(sp.get("r2_mean"), sp.get("r2_std"))}</td>',
                         f'<td class="num">{_num(sh.get("coverage"), 2)}</td>',
                         f'<td class="num">{_num(sp.get("coverage"), 2)}</td>'])
            classes.append("best" if i == 0 else "")
        lead = entries[0].get("lead_clear")
        verdict = "" if lead is None else (" (lead clear)" if lead else " (lead within the spread over repeats)")
        parts.append(f"<h3>{_esc(label)} <span class=\"muted\">{_esc(units.get(label, ''))}: best "
                     f"{_esc(entries[0]['method'])}{verdict}</span></h3>")
        parts.append(_table(["method", "R\u00b2 shuffled", "R\u00b2 spatial", "coverage shuffled",
                             "coverage spatial"], rows, classes))
    return "".join(parts)


def _cards(cards: Mapping[str, Any], primary: str) -> str:
    if not cards:
        return '<p class="muted">No clusters.</p>'
    parts = []
    for method in sorted(cards, key=lambda m: m != primary):
        parts.append(f"<h3>{_esc(method)}</h3>")
        for cid, card in cards[method].items():
            feats = "".join(f"<li>{_esc(f['feature'])}: mean {_num(f['mean'])}, z = {_num(f['zscore'], 2)}</li>"
                            for f in card.get("features", []))
            parts.append(
                f'<div class="card"><b><span class="swatch" style="background:{cluster_colour(int(cid))}"></span>'
                f"Cluster {_esc(cid)}: {_esc(card.get('name', ''))}</b> <span class=\"muted\">({card.get('size')} "
                f"regions)</span><ul>{feats}</ul><div class=\"muted\">Examples: "
                f"{_esc(', '.join(card.get('examples', [])))}</div></div>")
    return "".join(parts)


def _figures(folder: Path, primary: str) -> str:
    figs = folder / "figures"
    if not figs.is_dir():
        return '<p class="muted">No figures (figures = false).</p>'
    first = [LEADERBOARD_PNG, CLUSTER_MAP_PNG, "prediction_maps.png"]
    paths = [figs / f for f in first if (figs / f).is_file()]
    paths += sorted(p for p in figs.glob("*.png") if p.name not in first)
    return "".join(_image(p, p.stem.replace("_", " ")) for p in paths)


def write_report(folder: str | Path) -> Path:
    """Write ``report.html`` into a run folder (from its run.json, clusters.json and figures); returns its path.

    Raises:
        OSError, ValueError: If the folder holds no readable run.json.
    """
    folder = Path(folder)
    manifest = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    cards_path = folder / CLUSTER_CARDS_JSON
    cards = json.loads(cards_path.read_text(encoding="utf-8")) if cards_path.is_file() else {}
    primary = str(manifest.get("primary_method", ""))
    cfg = manifest.get("config", {})
    chosen = {"best": "the highest mean cross-validated R\u00b2 of this run",
              "auto": "fusion when in the run, else the first method"}.get(str(cfg.get("primary", "auto")),
                                                                          "chosen in the configuration")
    timings = manifest.get("timings_s", {})
    timing_rows = [[f"<td>{_esc(k.replace('embed_', 'embed: '))}</td>", f'<td class="num">{_num(v, 1)}</td>']
                   for k, v in timings.items()]
    timing_rows.append(["<td><b>total</b></td>", f'<td class="num"><b>{_num(manifest.get("total_s"), 1)}</b></td>'])
    versions = manifest.get("versions", {})
    version_rows = [[f"<td>{_esc(k)}</td>", f"<td>{_esc(v)}</td>"] for k, v in versions.items()]
    body = [
        f"<h1>RegionLens run: {_esc(folder.name)}</h1>",
        f"<p>RegionLens {_esc(manifest.get('regionlens', ''))}, device {_esc(manifest.get('device', ''))}, seed "
        f"{_esc(manifest.get('seed', ''))}, {_num(manifest.get('total_s'), 1)} s. Primary method (unsuffixed "
        f"layers): <b>{_esc(primary)}</b> ({_esc(chosen)}).</p>",
        "<h2>Inputs</h2>", _inputs(manifest),
        "<h2>Leaderboard</h2>", _leaderboard(manifest),
        "<h2>Maps and figures</h2>", _figures(folder, primary),
        "<h2>Clusters</h2>", _cards(cards, primary),
        "<h2>Timings (s)</h2>", _table(["stage", "seconds"], timing_rows),
        f'<p class="muted">Peak memory {_num(manifest.get("peak_rss_mb"), 0)} MB.</p>',
        "<h2>Versions</h2>", _table(["package", "version"], version_rows),
    ]
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>RegionLens run {_esc(folder.name)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    path = folder / REPORT_HTML
    replace_atomically(path, lambda fh: fh.write(page.encode("utf-8")))
    return path


def _cluster_names(folder: Path, primary: str) -> tuple[Any, dict[int, str]]:
    """The primary method's clusters layer of a run (``None`` without one) and its names: the layer's
    ``cluster_name`` column (where a rename is saved first), else ``clusters.json``'s."""
    import pyogrio

    gpkg = folder / GPKG_NAME
    if not gpkg.is_file() or LAYER_CLUSTERS not in {str(n) for n in pyogrio.list_layers(gpkg)[:, 0]}:
        return None, {}
    frame = pyogrio.read_dataframe(gpkg, layer=LAYER_CLUSTERS)
    if CLUSTER_NAME_FIELD in frame.columns:
        names = {int(c): str(n) for c, n in zip(frame[CLUSTER_FIELD], frame[CLUSTER_NAME_FIELD], strict=True)
                 if isinstance(n, str) and n}
    else:
        cards_path = folder / CLUSTER_CARDS_JSON
        cards = json.loads(cards_path.read_text(encoding="utf-8")).get(primary, {}) if cards_path.is_file() else {}
        names = {int(c): str(card.get("name", "")) for c, card in cards.items() if card.get("name")}
    return frame, names


def rewrite_report(folder: str | Path) -> list[Path]:
    """Bring a finished run's report up to date with its cluster names (after a rename).

    Redraws ``figures/cluster_map.png`` when the run drew one (from the primary method's clusters layer, named
    as in :func:`_cluster_names`), then rewrites ``report.html`` (its cards come from ``clusters.json``). Each
    file is replaced atomically; nothing else is touched, and a file the run did not write is not created.

    Returns:
        The files rewritten.

    Raises:
        OSError, ValueError: If the folder holds no readable run.json or no report.html.
    """
    folder = Path(folder)
    manifest = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    if not (folder / REPORT_HTML).is_file():
        raise ValueError(f"{folder} holds no {REPORT_HTML} to bring up to date.")
    primary = str(manifest.get("primary_method", ""))
    written = []
    figure = folder / "figures" / CLUSTER_MAP_PNG
    frame, names = _cluster_names(folder, primary) if figure.is_file() else (None, {})
    if frame is not None:
        tmp = figure.with_name(f".{figure.stem}.tmp-{os.getpid()}.png")
        try:
            plot_cluster_map(frame, names, tmp, f"{primary}: clusters")
            os.replace(tmp, figure)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(figure)
    written.append(write_report(folder))
    return written


def plot_run_figures(figures_dir: Path, rows: Sequence[Mapping[str, Any]], model: str | None, primary: str,
                     clusters: tuple[np.ndarray, dict[int, str], pd.DataFrame] | None, predictions: pd.DataFrame,
                     geometry: Any, crs: Any, units: Mapping[str, str]) -> list[str]:
    """The report's figures of a run: ``leaderboard.png``, ``cluster_map.png`` and ``prediction_maps.png`` (the
    primary method's); returns the paths written."""
    import geopandas as gpd

    out: list[Path | None] = []
    if model is not None:
        out.append(plot_leaderboard(rows, model, figures_dir / LEADERBOARD_PNG))
    ids = predictions.index
    if clusters is not None:
        frame = gpd.GeoDataFrame({CLUSTER_FIELD: clusters[0].astype(int)}, geometry=geometry.reindex(ids).values,
                                 crs=crs)
        out.append(plot_cluster_map(frame, clusters[1], figures_dir / CLUSTER_MAP_PNG,
                                    f"{primary}: clusters"))
    if predictions.shape[1]:
        frame = gpd.GeoDataFrame(predictions.reset_index(drop=True), geometry=geometry.reindex(ids).values, crs=crs)
        labels = [c[: -len(PRED)] for c in predictions.columns if str(c).endswith(PRED)]
        out.append(plot_prediction_maps(frame, labels, units, figures_dir / "prediction_maps.png",
                                        f"{primary}: out-of-fold predictions"))
    return [str(p) for p in out if p is not None]
