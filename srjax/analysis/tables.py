"""Feature tables on disk: CSV for people and spreadsheets, Parquet for programs.

A table is a dict of equal-length numpy columns. Both files are written under a
temporary name and renamed into place; either can be read back.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from srjax.errors import SrjaxError
from srjax.outputs import atomic_path

Table = dict[str, np.ndarray]
# Dictionary encoding does not shrink measured columns (few repeated values) and took most
# of the time of writing them; CSV rows are formatted in batches larger than pyarrow's
# default 1024, which saves a sixth of the time.
PARQUET_OPTIONS = {"use_dictionary": False}
CSV_OPTIONS = pa_csv.WriteOptions(batch_size=1 << 16)


def concatenate(tables: list[Table]) -> Table:
    return {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}


def write(table: Table, path: Path) -> None:
    """``path`` with suffix .csv or .parquet."""
    arrow = pa.table({name: pa.array(column) for name, column in table.items()})
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            pq.write_table(arrow, tmp, **PARQUET_OPTIONS)
        else:
            pa_csv.write_csv(arrow, tmp, write_options=CSV_OPTIONS)


class Writer:
    """A table written a batch of rows at a time to ``stem``.csv and ``stem``.parquet, so a
    table too large to hold need never be; both appear only once the block exits cleanly.
    Batches are gathered to at least ``rows`` rows (a Parquet row group each)."""

    def __init__(self, stem: Path, rows: int = 1 << 18):
        self.stem, self.rows = Path(stem), rows
        self.pending, self.pending_rows = [], 0

    def __enter__(self):
        self.stack = contextlib.ExitStack().__enter__()
        self.paths = [self.stack.enter_context(atomic_path(self.stem.with_suffix(s))) for s in (".csv", ".parquet")]
        self.writers = None
        return self

    def write(self, table: Table) -> None:
        self.pending.append(table)
        self.pending_rows += len(next(iter(table.values())))
        if self.pending_rows >= self.rows:
            self._flush()

    def _flush(self) -> None:
        arrow = pa.table({name: pa.array(column) for name, column in concatenate(self.pending).items()})
        self.pending, self.pending_rows = [], 0
        if self.writers is None:
            self.writers = [pa_csv.CSVWriter(str(self.paths[0]), arrow.schema, write_options=CSV_OPTIONS),
                            pq.ParquetWriter(str(self.paths[1]), arrow.schema, **PARQUET_OPTIONS)]
        for writer in self.writers:
            writer.write_table(arrow)

    def __exit__(self, *exc):
        if self.pending and exc[0] is None:
            self._flush()
        for writer in self.writers or ():
            writer.close()
        return self.stack.__exit__(*exc)


def read(path: str | Path, columns: tuple | None = None) -> Table:
    """The table at ``path`` (a .csv or .parquet file, or a folder holding features.parquet);
    only ``columns`` of it, if given."""
    path, columns = Path(path), None if columns is None else list(columns)
    if not path.exists():
        raise SrjaxError(f"feature table {path} does not exist; make one with `srjax quantify`")
    if path.is_dir():
        path = path / "features.parquet"
    try:
        if path.suffix != ".parquet":
            arrow = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(include_columns=columns))
            return {name: arrow.column(name).to_numpy() for name in arrow.column_names}
        file = pq.ParquetFile(path)
        # A column at a time: a table of millions of rows is never held twice, as Arrow's and as numpy's.
        return {name: file.read([name]).column(0).to_numpy() for name in columns or file.schema_arrow.names}
    except (pa.ArrowException, OSError) as err:
        raise SrjaxError(f"feature table {path} cannot be read: {str(err).splitlines()[0]}") from None


def rows(table: Table, order: np.ndarray | None = None) -> list[dict]:
    order = np.arange(len(next(iter(table.values())))) if order is None else order
    return [{name: column[i].item() for name, column in table.items()} for i in order]
