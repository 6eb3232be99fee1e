"""Reader of origin-destination (OD) flow tables.

A CSV file (comma, semicolon or tab separated, detected from the header line) or any OGR-readable
attribute table (GeoPackage, dBase, spreadsheet) with one row per flow: origin region id, destination
region id and a non-negative count. Ids are compared with the region ids as text.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from backend.config import OdSource
from backend.errors import InputError
from backend.io._layers import str_series, values_to_str

__all__ = ["read_od"]

_CSV_SUFFIXES = {".csv", ".txt", ".tsv"}
_INT_FLOAT = re.compile(r"^-?\d+\.0+$")


def _read_csv(path: Path, place: str) -> pd.DataFrame:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            head = fh.readline()
        delimiter = csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter if head.strip() else ","
    except csv.Error:
        delimiter = ","
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{place}: cannot be read as a UTF-8 CSV file ({exc}). Save it as CSV (UTF-8).") from exc
    try:
        return pd.read_csv(path, sep=delimiter, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{place}: cannot be read as a CSV table ({exc}). Save it as CSV (UTF-8).") from exc


def _read_table(path: Path, place: str) -> pd.DataFrame:
    if path.suffix.lower() in _CSV_SUFFIXES:
        return _read_csv(path, place)
    import pyogrio

    try:
        return pd.DataFrame(pyogrio.read_dataframe(path, read_geometry=False))
    except Exception as exc:  # driver-specific errors
        raise InputError(f"{place}: cannot be read as a table ({exc}). Save it as CSV.") from exc


def _match_ids(ids: pd.Series, known: set[str]) -> pd.Series:
    """Ids as text; ``'12.0'`` becomes ``'12'`` when only the latter is a region id."""
    text = values_to_str(ids)

    def fix(value: object) -> object:
        if isinstance(value, str) and value not in known and _INT_FLOAT.match(value):
            short = value.split(".", 1)[0]
            return short if short in known else value
        return value

    return text.map(fix)


def _rows(mask: pd.Series | np.ndarray) -> str:
    """1-based file line numbers (header = line 1) of the first few flagged rows."""
    lines = (np.flatnonzero(np.asarray(mask)) + 2).tolist()
    shown = ", ".join(str(n) for n in lines[:5])
    return shown + (f" and {len(lines) - 5:,} more" if len(lines) > 5 else "")


def read_od(src: OdSource, region_ids: Iterable[object], report: list[str]) -> pd.DataFrame:
    """Read an OD flow table and keep the flows between known regions.

    Args:
        src: Path and column names of the table.
        region_ids: The region ids (compared as text).
        report: Notes for the user: rows dropped because they name unknown regions.

    Returns:
        Columns ``origin`` and ``destination`` (region ids as str) and ``count`` (float), one row per
        input row kept (duplicate pairs are kept; views sum them).

    Raises:
        InputError: If the file is missing, unreadable or empty, a column is missing, a count is
            missing, not a number or negative, or no row names two known regions.
    """
    path = Path(src.path)
    place = f"[od] table {path}"
    if not path.exists():
        raise InputError(f"{place}: file not found. Check the path, or export the table again.")
    df = _read_table(path, place)
    df.columns = [str(c).strip() for c in df.columns]
    wanted = {"origin": src.origin_field, "destination": src.destination_field, "count": src.count_field}
    missing = [f"{role} column '{col}'" for role, col in wanted.items() if col not in df.columns]
    if missing:
        raise InputError(
            f"{place}: no {', no '.join(missing)}. Columns present: {list(df.columns)}. "
            "Set origin_field, destination_field and count_field to the right names."
        )
    if len(df) == 0:
        raise InputError(f"{place}: the table has no rows. Choose a table with flows.")
    known = {str(r) for r in region_ids}
    origin = _match_ids(df[src.origin_field], known)
    destination = _match_ids(df[src.destination_field], known)
    raw = df[src.count_field]
    if not pd.api.types.is_numeric_dtype(raw):
        raw = raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    count = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = count.isna() | ~np.isfinite(count)
    if bad.any():
        raise InputError(
            f"{place}: {int(bad.sum()):,} rows have a missing or non-numeric count in '{src.count_field}' "
            f"(lines {_rows(bad)}). Fix or delete them."
        )
    neg = count < 0
    if neg.any():
        raise InputError(
            f"{place}: {int(neg.sum()):,} rows have a negative count in '{src.count_field}' (lines {_rows(neg)}). "
            "Counts of trips cannot be negative; fix or delete them."
        )
    ok = origin.isin(known) & destination.isin(known)
    if not ok.any():
        examples = pd.unique(pd.concat([origin, destination]).dropna())[:5].tolist()
        raise InputError(
            f"{place}: no row names two known regions (ids in the table look like {examples}; region ids look "
            f"like {sorted(known)[:3]}). Check that the table uses the same ids as the region layer's id field."
        )
    if not ok.all():
        report.append(
            f"{int((~ok).sum()):,} of {len(df):,} OD rows name regions that are not in the region "
            f"layer and were ignored ({place})."
        )
    return pd.DataFrame(
        {
            "origin": str_series(origin[ok].to_numpy(dtype=object)),
            "destination": str_series(destination[ok].to_numpy(dtype=object)),
            "count": count[ok].to_numpy(dtype=np.float64),
        }
    )
