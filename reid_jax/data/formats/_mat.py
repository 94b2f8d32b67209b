"""MATLAB v5 (.mat) loading and value checks shared by the attribute/protocol parsers.

`scipy.io.loadmat` (no squeeze) returns structs as (1, 1) structured arrays, cell arrays as
object arrays of 1-element string arrays and numbers as 2-D float arrays; these helpers unwrap
them and raise `DatasetFormatError` naming the file, record and field when the shape or type is
not what the format promises.

`scipy.io.loadmat` runs in a helper process: on some corrupt files (bytes spliced into a v5
file, found by the fuzz tests) its compiled reader crashes with a segmentation fault, which
would kill the whole run. In a helper process the crash becomes a `DatasetFormatError` naming
the file. The helper is started once (spawned, so it never inherits JAX's threads) and reused;
a crashed one is replaced on the next call.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import scipy.io

from reid_jax.data.errors import DatasetFormatError

_helper: ProcessPoolExecutor | None = None
_helper_lock = threading.Lock()


def _reader_process() -> ProcessPoolExecutor:
    global _helper
    with _helper_lock:
        if _helper is None:
            context = multiprocessing.get_context("spawn")
            _helper = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return _helper


def _discard_reader_process() -> None:
    global _helper
    with _helper_lock:
        if _helper is not None:
            _helper.shutdown(wait=False, cancel_futures=True)
        _helper = None


def _loadmat(path: str) -> dict[str, Any]:
    """Runs in the helper process."""
    return scipy.io.loadmat(path)


def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a MATLAB v5 file with `scipy.io.loadmat` (no squeezing) in the helper process.

    Raises:
      DatasetFormatError: missing file, truncated or malformed content (including content
        that crashes scipy's reader), or a v7.3 (HDF5) file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetFormatError(path, "file not found")
    try:
        return _reader_process().submit(_loadmat, path).result()
    except BrokenProcessPool as e:
        _discard_reader_process()
        raise DatasetFormatError(
            path, "malformed .mat file: scipy's MATLAB reader crashed on it"
        ) from e
    except NotImplementedError as e:  # scipy's answer to v7.3 files
        raise DatasetFormatError(path, f"MATLAB v7.3 (HDF5) file where v5 was expected: {e}") from e
    except Exception as e:  # scipy raises many exception types on corrupt input
        raise DatasetFormatError(
            path, f"malformed or truncated .mat file ({type(e).__name__}: {e})"
        ) from e


def get_field(container: Any, field: str, *, path: str, record: str | int | None = None) -> Any:
    """Returns `container[field]` for a loadmat dict or a (1, 1) struct array."""
    if isinstance(container, dict):
        if field not in container:
            raise DatasetFormatError(path, "missing variable", record=record, field=field)
        return container[field]
    names = getattr(getattr(container, "dtype", None), "names", None)
    if names is None or np.size(container) != 1:
        # The container's own name is not known here; name the field it should hold.
        raise DatasetFormatError(
            path, "expected a 1x1 MATLAB struct holding this field", record=record, field=field
        )
    if field not in names:
        raise DatasetFormatError(path, "missing struct field", record=record, field=field)
    return container.ravel()[0][field]


def struct_field_names(struct: Any) -> tuple[str, ...]:
    """Returns the field names of a loadmat struct array in file order (empty if not a struct)."""
    return tuple(getattr(getattr(struct, "dtype", None), "names", None) or ())


def cell_strings(
    value: Any, *, path: str, field: str, record: str | int | None = None
) -> list[str]:
    """Unwraps a cell vector of strings (or a char matrix, one string per row) into a list.

    Returns:
      The stripped strings in storage order.

    Raises:
      DatasetFormatError: not a cell of non-empty strings; the field names the bad element.
    """
    arr = np.asarray(value)
    if arr.dtype.kind == "U":  # a char matrix: one (blank-padded) string per element
        out = [str(s).strip() for s in arr.ravel()]
        for j, s in enumerate(out):
            if not s:
                raise DatasetFormatError(path, "empty string", record=record, field=f"{field}[{j}]")
        return out
    if arr.dtype != object:
        raise DatasetFormatError(
            path,
            f"expected a cell array of strings, got {arr.dtype} array",
            record=record,
            field=field,
        )
    out = []
    for j, item in enumerate(arr.ravel()):
        item = np.asarray(item)
        if item.dtype.kind != "U" or item.size != 1 or not str(item.ravel()[0]).strip():
            raise DatasetFormatError(
                path,
                f"expected a non-empty string, got {item!r:.60}",
                record=record,
                field=f"{field}[{j}]",
            )
        out.append(str(item.ravel()[0]).strip())
    return out


def integer_array(
    value: Any, *, path: str, field: str, record: str | int | None = None, length: int | None = None
) -> np.ndarray:
    """Returns a numeric MATLAB array as int64 (shape kept), checking integrality.

    Args:
      value: the loaded array.
      path: the .mat file, for errors.
      field: field name, for errors.
      record: record (struct/split) name, for errors.
      length: if given, the array must hold exactly this many values and is flattened.

    Returns:
      int64 array; flattened to [length] when `length` is given.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise DatasetFormatError(
            path, f"expected a numeric array, got {arr.dtype}", record=record, field=field
        )
    if length is not None:
        if arr.size != length:
            raise DatasetFormatError(
                path, f"expected {length} values, got {arr.size}", record=record, field=field
            )
        arr = arr.ravel()
    if arr.dtype.kind == "f":
        # 2**63 is the first float outside int64; casting it would wrap silently.
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)
    elif arr.dtype.kind == "u":
        bad = arr > np.iinfo(np.int64).max
    else:
        bad = np.zeros(arr.shape, bool)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        value = arr[tuple(where)]
        kind = "out-of-int64-range" if np.isfinite(value) and value == np.round(value) else ""
        raise DatasetFormatError(
            path,
            f"{kind or 'non-integer'} value {value!r} at index {where}",
            record=record,
            field=field,
        )
    return arr.astype(np.int64)
