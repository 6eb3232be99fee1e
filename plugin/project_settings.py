"""The run dock's choices stored in the QGIS project (per project, saved with the .qgz).

Each field of :class:`plugin.parameters.RunChoices` is one project entry ``RegionLens/run/<field>``
(``QgsProject.writeEntry``), holding its value as JSON: layer ids, field names, numbers, the label and
method lists. Unknown or malformed entries are ignored, so a project saved by another version loads
with defaults for what it does not know.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from typing import Any

from qgis.core import QgsProject

from .parameters import LabelChoice, MethodChoice, RunChoices

__all__ = ["SCOPE", "clear_choices", "load_choices", "save_choices"]

#: Scope of the plugin's project entries.
SCOPE = "RegionLens"
_PREFIX = "run/"


def save_choices(choices: RunChoices, project: QgsProject | None = None) -> None:
    """Store the choices in the project (marks it dirty only when something changed)."""
    project = project or QgsProject.instance()
    data = asdict(choices)
    for f in fields(RunChoices):
        text = json.dumps(data[f.name], sort_keys=True)
        old, ok = project.readEntry(SCOPE, _PREFIX + f.name, "")
        if not ok or old != text:
            project.writeEntry(SCOPE, _PREFIX + f.name, text)


def load_choices(project: QgsProject | None = None) -> RunChoices | None:
    """The choices stored in the project, or ``None`` if it holds none."""
    project = project or QgsProject.instance()
    values: dict[str, Any] = {}
    for f in fields(RunChoices):
        text, ok = project.readEntry(SCOPE, _PREFIX + f.name, "")
        if not ok or not text:
            continue
        try:
            values[f.name] = json.loads(text)
        except ValueError:
            continue
    if not values:
        return None
    choices = RunChoices()
    for f in fields(RunChoices):
        if f.name not in values:
            continue
        value = _convert(f.name, values[f.name], getattr(choices, f.name))
        if value is not None:
            setattr(choices, f.name, value)
    return choices


def clear_choices(project: QgsProject | None = None) -> None:
    """Remove the stored choices."""
    project = project or QgsProject.instance()
    for f in fields(RunChoices):
        project.removeEntry(SCOPE, _PREFIX + f.name)


def _convert(name: str, value: Any, default: Any) -> Any:
    """``value`` if it has the default's type (lists of labels/methods rebuilt), else ``None``."""
    if name == "labels":
        if not isinstance(value, list):
            return None
        labels = [_build(LabelChoice, item) for item in value if isinstance(item, dict)]
        return [lab for lab in labels if lab is not None and (lab.field or lab.points_layer_id)]
    if name == "methods":
        if not isinstance(value, list):
            return None
        methods = [_build(MethodChoice, item) for item in value if isinstance(item, dict) and item.get("name")]
        return [m for m in methods if m is not None]
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, list):
        return [str(v) for v in value] if isinstance(value, list) else None
    return None


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs = {key: val for key, val in data.items() if key in known}
    required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    if any(n not in kwargs for n in required):
        return None
    try:
        return cls(**kwargs)
    except TypeError:
        return None
