"""A leads or actions file read in chunks, with the loaders' shape checks and messages.

:func:`features.loaders.read_table` reads a whole file; a file bigger than memory is
read here instead, a chunk at a time, and each chunk goes through the loaders' own
value checks (:func:`features.loaders.parse_leads`, :func:`features.loaders.parse_actions`).
The file-level checks (readable, not empty, the spec's delimiter, unique and required
columns, no row longer than the header) are the very ones ``read_table`` makes, so a
bad file gets the same one-line refusal whichever way it is read, and
:func:`file_lines` turns a chunk's row numbers into the whole file's lines.

CSV is read with pandas' chunked reader (every column as text, the spec's delimiter,
quote character and encoding); Parquet with pyarrow's buffered reader, which decodes a
row group at a time, so memory follows the file's row-group size, not its length.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.loaders import (
    DataError,
    _check_delimiter,
    _check_required,
    _check_unique,
    _csv_call,
    _encoding,
    _long_row_error,
    _one_line,
    _raw_header,
    format_rows,
)
from features.spec import CsvFormat

#: pyarrow reads Parquet through a buffer this big instead of a whole row group at once.
PARQUET_BUFFER = 1 << 20
#: The file line of a chunk's first data row is its position plus this (header = line 1).
FIRST_DATA_LINE = 2
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIX = ".parquet"


def is_csv(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES)


def is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIX)


class ChunkedTable:
    """A leads or actions file, checked for shape on opening and read in chunks.

    ``rows`` is exact for Parquet; for CSV it counts lines, which overstates the rows
    only when a quoted value spans lines (it sizes shards and progress bars, no more).
    """

    def __init__(
        self, path: Path, kind: str, required: Sequence[str], csv: CsvFormat | None = None
    ) -> None:
        self.path, self.kind, self.name = path, kind, path.name
        self.required = list(dict.fromkeys(required))
        self.format = csv or CsvFormat.model_validate({})
        self._exists()
        self.csv = is_csv(path)
        self.columns = self._csv_header() if self.csv else self._parquet_header()
        _check_required(self.name, self.columns, self.required)
        self.rows = self._count()
        if self.rows == 0:
            raise DataError(self.name, f"the {kind} file has no rows (only a header)")

    def chunks(
        self, size: int, columns: Sequence[str] | None = None
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(rows, their file lines) in file order; ``columns`` narrows what is returned."""
        first = 0
        parts = self._csv_chunks(size) if self.csv else self._parquet_chunks(size, columns)
        for frame in parts:
            if self.csv and columns is not None:
                frame = frame[list(columns)]  # Parquet reads only these in the first place
            frame.index = pd.RangeIndex(len(frame))  # in place: no copy of the chunk
            lines = np.arange(first, first + len(frame), dtype=np.int64) + FIRST_DATA_LINE
            first += len(frame)
            yield frame, lines
        if first == 0:
            raise DataError(self.name, f"the {self.kind} file has no rows (only a header)")

    def _exists(self) -> None:
        p = self.path
        if not p.is_file():
            where = "is a directory, not a file" if p.is_dir() else "not found"
            raise DataError(self.name, f"{self.kind} file {where} ({p})")
        if not (is_csv(p) or is_parquet(p)):
            raise DataError(
                self.name,
                f"cannot read a {self.kind} file of this type; expected .csv, .csv.gz or .parquet",
            )

    def _csv_header(self) -> list[str]:
        if self.path.stat().st_size == 0:
            raise DataError(self.name, f"the {self.kind} file is empty: it has no rows")
        header = _csv_call(
            self.path,
            self.kind,
            lambda: _raw_header(self.path, self.format),
            encoding=self.format.encoding,
        )
        if header is None:
            raise DataError(self.name, f"the {self.kind} file is empty: it has no rows")
        _check_delimiter(self.name, header, self.format.delimiter)
        _check_unique(self.name, header)
        return header

    def _parquet_header(self) -> list[str]:
        names = self._parquet(lambda: [str(n) for n in pq.read_schema(self.path).names])
        _check_unique(self.name, names)
        return names

    def _count(self) -> int:
        if not self.csv:
            return int(self._parquet(lambda: pq.ParquetFile(self.path).metadata.num_rows))
        opener = gzip.open if self.name.lower().endswith(".gz") else open
        lines, last = 0, b"\n"
        with opener(self.path, "rb") as handle:
            while block := handle.read(1 << 24):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(0, lines + (last != b"\n") - 1)

    def _csv_chunks(self, size: int) -> Iterator[pd.DataFrame]:
        p, kind, fmt = self.path, self.kind, self.format
        reader = _csv_call(
            p,
            kind,
            lambda: pd.read_csv(
                p,
                dtype=str,
                keep_default_na=False,
                na_filter=False,  # "NA" and "" stay text the loaders judge
                index_col=False,
                sep=fmt.delimiter,
                quotechar=fmt.quotechar,
                encoding=_encoding(fmt),
                chunksize=size,
            ),
            encoding=fmt.encoding,
        )
        with reader, warnings.catch_warnings():
            # pandas warns, then drops, fields beyond the header; the loaders refuse them.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            while True:
                try:
                    frame = _csv_call(p, kind, lambda: next(reader, None), encoding=fmt.encoding)
                except pd.errors.ParserWarning:
                    raise _long_row_error(p, len(self.columns), fmt) from None
                if frame is None:
                    return
                yield frame

    def _parquet_chunks(self, size: int, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
        wanted = list(columns) if columns is not None else None
        handle = self._parquet(
            lambda: pq.ParquetFile(self.path, pre_buffer=False, buffer_size=PARQUET_BUFFER)
        )
        batches = handle.iter_batches(batch_size=size, columns=wanted)
        while True:
            batch = self._parquet(lambda: next(batches, None))
            if batch is None:
                return
            table = pa.Table.from_batches([batch])
            del batch  # self_destruct below frees each column once converted
            # ignore_metadata: a stored pandas index is an ordinary column, as the loaders
            # read it; split_blocks: no consolidated copy of all numeric columns.
            yield table.to_pandas(ignore_metadata=True, split_blocks=True, self_destruct=True)

    def _parquet(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except PermissionError:
            raise DataError(
                self.name, f"the {self.kind} file cannot be read (permission denied)"
            ) from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(
                self.name,
                f"the {self.kind} file is not a readable Parquet file ({_one_line(str(exc))})",
            ) from None


@contextmanager
def file_lines(lines: np.ndarray) -> Iterator[None]:
    """Turn a loader's refusal of a chunk into one that names lines of the whole file.

    The loaders number rows from the top of what they were given (row 2 is its first);
    ``lines[i]`` is the file line of the chunk's row ``i``.
    """
    try:
        yield
    except DataError as exc:
        if not exc.rows:
            raise
        moved = [int(lines[r - FIRST_DATA_LINE]) for r in exc.rows]
        detail = exc.detail.replace(f"({format_rows(exc.rows)})", f"({format_rows(moved)})")
        raise DataError(exc.file, detail, column=exc.column, rows=moved) from None
