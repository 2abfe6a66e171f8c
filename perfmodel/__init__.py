"""perfmodel: an analytical performance model for LLM training and serving.

The library is the product; the CLI (``perfmodel ...``) and the notebooks are thin layers over it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import InputError, UnknownIdError
from .specdb import Database, load_database

__all__ = ["__version__", "InputError", "UnknownIdError", "Database", "load_database"]
