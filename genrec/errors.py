"""Errors shared by every layer, in a module that imports nothing of genrec's."""
from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data. The message names the file (and line or column) and the fix."""
