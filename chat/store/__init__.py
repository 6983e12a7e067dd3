"""The store, on SQLite or PostgreSQL: the only code that speaks SQL.

- ``store``: ``Store``, the one interface the rest of the code uses;
- ``writer``: the store's own write thread, batching writes into transactions;
- ``tx``: one batch as one transaction (``Tx``, ``WriteOp``, ``commit_batch``);
- ``writes``: the write operations, plain functions of a ``Tx``;
- ``reads``: history, rooms, activity, unread counts, replay;
- ``search``: full-text queries over messages;
- ``retention``: old events deleted (``CHAT_RETENTION_DAYS``);
- ``fill``: synthetic history for the benchmarks (bench/generate.py);
- ``dialect``: what differs between the two databases (``WriteDb``, ``ReadDb``);
- ``sqlite``: SQLite's connections; ``maintenance``: its WAL checkpoints;
- ``postgres``: PostgreSQL's connections, id counter and migrations.
"""

from chat.store import writes
from chat.store.store import Store
from chat.store.tx import Tx, WriteOp

__all__ = ["Store", "Tx", "WriteOp", "writes"]
