"""The results table: its columns, streamed part files, resume bookkeeping and the final sorted table.

Requires: pyarrow. Rows are dicts with exactly the keys of :data:`COLUMNS`.
Guarantees:
- :class:`PartWriter` appends finished rows as numbered Parquet part files under ``RESULTS_DIR/parts``,
  each written to a temporary name and renamed, so a killed driver leaves only complete parts.
- :func:`finished` lists the (point, chip) pairs already in the parts or the final table.
- :func:`consolidate` writes the final table (``results.parquet`` or ``results.csv``) sorted by (point,
  chip), one row per pair, then removes the parts: equal rows give byte-identical files, however the rows
  were split into parts or interrupted.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from admc.core.atomic import staged_file
from admc.core.errors import AdmcError

COLUMNS = pa.schema([
    ("point", pa.int64()),
    ("chip", pa.int64()),
    ("kind", pa.string()),  # "grid" or "sensitivity"
    ("effect", pa.string()),  # sensitivity points: "baseline" or the effect alone
    ("parameters", pa.string()),  # the point's axis values, canonical JSON
    ("chip_parameters", pa.string()),  # values drawn for this chip from the spec's distributions, JSON
    ("build", pa.string()),  # the build's key (sha256 of its inputs)
    ("seed", pa.int64()),  # the chip's seed: its static errors and read noise
    ("status", pa.string()),  # ok | build_failed | diverged | error
    ("reason", pa.string()),
    ("passed", pa.bool_()),
    ("w2", pa.float64()),  # W2(twin samples, reference samples)
    ("w2_ratio", pa.float64()),  # ... / W2(Gaussian fit, reference): verify's twin criterion
    ("mmd", pa.float64()),
    ("nrmse_max_step", pa.float64()),  # worst per-step NRMSE of the twin against the reference
    ("nrmse_final", pa.float64()),
    ("nrmse_vs_ideal", pa.float64()),  # worst per-step NRMSE of the twin against the ideal program
    ("loop_iterations", pa.int64()),  # summed over steps and phases of one run
    ("latency_s", pa.float64()),  # estimate: the build's, or iterations × iteration time × repeats
    ("modules_used", pa.int64()),
    ("state_channels", pa.int64()),
    ("steps", pa.int64()),
])
FORMATS = ("parquet", "csv")
PARTS = "parts"


def final_path(directory: Path, file_format: str) -> Path:
    return directory / f"results.{file_format}"


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=COLUMNS)


class PartWriter:
    """Numbered part files; each ``write`` is one atomic file."""

    def __init__(self, directory: Path):
        self.directory = directory / PARTS
        self.directory.mkdir(parents=True, exist_ok=True)
        numbers = [int(path.stem.split("-")[1]) for path in self.directory.glob("part-*.parquet")]
        self.next = max(numbers, default=-1) + 1

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        path = self.directory / f"part-{self.next:06d}.parquet"
        with staged_file(path) as temporary:
            pq.write_table(_table(rows), temporary)
        self.next += 1


def read_table(path: Path) -> pa.Table:
    """A results table in either format, with the schema of :data:`COLUMNS`."""
    try:
        if path.suffix == ".csv":
            options = pa_csv.ConvertOptions(column_types=COLUMNS, strings_can_be_null=False, null_values=[""])
            table = pa_csv.read_csv(path, convert_options=options)
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise AdmcError(f"{path}: cannot read the results table ({error})") from None
    if table.schema.names != COLUMNS.names:
        raise AdmcError(f"{path}: columns {table.schema.names} are not a sweep results table's")
    return table.cast(COLUMNS)


def _sources(directory: Path, file_format: str) -> list[Path]:
    parts = sorted((directory / PARTS).glob("part-*.parquet")) if (directory / PARTS).is_dir() else []
    final = final_path(directory, file_format)
    return ([final] if final.is_file() else []) + parts


def finished(directory: Path, file_format: str) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for source in _sources(directory, file_format):
        table = read_table(source)
        pairs.update(zip(table.column("point").to_pylist(), table.column("chip").to_pylist(), strict=True))
    return pairs


def read_rows(directory: Path, file_format: str) -> list[dict]:
    """Every finished row (final table and parts), one per (point, chip), sorted."""
    rows: dict[tuple[int, int], dict] = {}
    for source in _sources(directory, file_format):
        for row in read_table(source).to_pylist():
            rows.setdefault((row["point"], row["chip"]), row)
    return [rows[key] for key in sorted(rows)]


def consolidate(directory: Path, file_format: str) -> Path:
    sources = _sources(directory, file_format)
    table = _table(read_rows(directory, file_format))
    final = final_path(directory, file_format)
    with staged_file(final) as temporary:
        if file_format == "csv":
            pa_csv.write_csv(table, temporary)
        else:
            pq.write_table(table, temporary)
    for source in sources:
        if source != final:
            source.unlink()
    # A driver killed while writing a part leaves its staged temporary (``staged_file``): it never held a
    # finished row (the part is only ever renamed into place whole), so it goes with the parts.
    for leftover in (directory / PARTS).glob(".part-*.partial") if (directory / PARTS).is_dir() else []:
        leftover.unlink(missing_ok=True)
    if (directory / PARTS).is_dir() and not any((directory / PARTS).iterdir()):
        (directory / PARTS).rmdir()
    return final
