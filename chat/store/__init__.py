"""The SQLite store: the only code that speaks SQL (see core.py for how writes work)."""

from chat.store import writes
from chat.store.core import Store, Tx, WriteOp

__all__ = ["Store", "Tx", "WriteOp", "writes"]
