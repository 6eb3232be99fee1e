"""OD tables: column names, id matching as text, unknown regions, bad counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import OdSource
from backend.errors import InputError
from backend.io.tables import read_od

IDS = ["1", "2", "3", "4"]


def _csv(tmp_path: Path, text: str, name: str = "od.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_naming_unknown_regions_are_dropped_and_counted(tmp_path: Path) -> None:
    path = _csv(tmp_path, "origin,destination,count\n1,2,5\n2,1,3\n1,2,2\n99,1,4\n3,98,1\n4,4.0,7\n")
    report: list[str] = []
    od = read_od(OdSource(str(path)), IDS, report)
    assert list(od.columns) == ["origin", "destination", "count"]
    assert od.values.tolist() == [["1", "2", 5.0], ["2", "1", 3.0], ["1", "2", 2.0], ["4", "4", 7.0]]
    assert report == [
        f"2 of 6 OD rows name regions that are not in the region layer and were ignored ([od] table {path})."
    ]


def test_custom_columns_and_semicolons(tmp_path: Path) -> None:
    path = _csv(tmp_path, "\ufefffrom;to;trips\n1;3;10\n3;1;0\n")
    od = read_od(OdSource(str(path), "from", "to", "trips"), IDS, [])
    assert od["count"].tolist() == [10.0, 0.0] and od["origin"].tolist() == ["1", "3"]


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    path = _csv(tmp_path, "o,d,n\n1,2,3\n")
    with pytest.raises(
        InputError,
        match=r"\[od\] table .*od\.csv: no origin column 'origin', no destination column "
        r"'destination', no count column 'count'\. Columns present: \['o', 'd', 'n'\]",
    ):
        read_od(OdSource(str(path)), IDS, [])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1,2,5\n2,1,many\n1,3,\n", r"2 rows have a missing or non-numeric count in 'count' \(lines 3, 4\)"),
        ("1,2,-5\n2,1,3\n", r"1 rows have a negative count in 'count' \(lines 2\)"),
        ("A,B,5\n", r"no row names two known regions .*same ids as the region layer"),
    ],
    ids=["non-numeric counts", "negative counts", "no known region at all"],
)
def test_bad_rows_are_named(tmp_path: Path, rows: str, message: str) -> None:
    path = _csv(tmp_path, "origin,destination,count\n" + rows)
    with pytest.raises(InputError, match=message):
        read_od(OdSource(str(path)), IDS, [])


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\[od\] table .*none\.csv: file not found"):
        read_od(OdSource(str(tmp_path / "none.csv")), IDS, [])
    with pytest.raises(InputError, match=r"the table has no rows"):
        read_od(OdSource(str(_csv(tmp_path, "origin,destination,count\n"))), IDS, [])
