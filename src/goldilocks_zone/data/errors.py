"""Errors raised by the data layer; each message says what to do next."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not in any of the places searched.

    The message names the data set, every place searched and how to get the files.
    """


class CorruptDatasetError(ValueError):
    """A data set's files exist but are malformed (wrong magic number, wrong counts,
    truncated archive, unexpected shapes). Never returned as a partial data set."""
