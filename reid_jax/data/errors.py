"""Errors raised on bad dataset input: they always name the file, the record and the field."""

from __future__ import annotations


class DatasetFormatError(ValueError):
    """A dataset file does not match its format.

    Args:
      path: the file that is wrong.
      message: what is wrong.
      record: index (or name) of the offending record, if any.
      field: name of the offending field, if any.
    """

    def __init__(
        self, path: str, message: str, *, record: int | str | None = None, field: str | None = None
    ):
        where = str(path)
        if record is not None:
            where += f", record {record}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.message = message
        self.record = record
        self.field = field

    def __reduce__(self):
        # Rebuilt from its parts, not from the formatted text: a grain worker process sends
        # the error to the main process pickled, and the default (cls(*args)) would fail.
        return _rebuild, (type(self), self.path, self.message, self.record, self.field)


def _rebuild(cls: type, path: str, message: str, record, field) -> DatasetFormatError:
    return cls(path, message, record=record, field=field)
