"""The store's write thread: how a write reaches the database and how its outcome comes back.

The store owns one thread (an executor of one worker); the write connection is created, used
and closed on it alone. A caller queues a write operation and awaits a future. While no batch
is on the thread, a write submits at once: everything queued, up to ``write_batch_max``, goes
to the thread as one job, one transaction (``tx.commit_batch``). When the job is done, its
done-callback, still on the thread, hands the outcome to the loop in one
``call_soon_threadsafe`` (``_committed``), which gives the committed events to ``on_commit``
(after COMMIT, in id order), answers the callers and submits the next batch: whatever was
queued meanwhile. One thread hop per batch, none per operation or statement, and no writer
task: each loop cycle between a commit and its broadcast was a wait behind whatever else the
loop had to do (docs/design/performance.md).

A caller's ``await`` returning means its write is committed. Once the thread is gone (its
executor shut down, or the thread died), writes fail at once with ``Unavailable``: no job is
ever queued for a thread that will not run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from chat.config import Settings
from chat.errors import Unavailable, Unwritable
from chat.events import Event
from chat.store.dialect import WriteDb
from chat.store.tx import Outcome, WriteOp, commit_batch

log = logging.getLogger(__name__)

T = TypeVar("T")

THREAD_NAME = "chat-store-writer"
CLOSE_WAIT_S = 10.0

SHUTTING_DOWN = "the store is shutting down"
THREAD_GONE = "the store's write thread has stopped"


@dataclass(slots=True)
class _Pending(Generic[T]):
    op: WriteOp[T]
    future: asyncio.Future[T]


def _fail(pending: list[_Pending[Any]], message: str, retry_after_s: int = 1) -> None:
    for item in pending:
        if not item.future.done():
            item.future.set_exception(Unavailable(message, retry_after_s))


class Writer:
    def __init__(
        self,
        settings: Settings,
        on_commit: Callable[[list[Event]], None],
        open_db: Callable[[Settings], WriteDb],
    ) -> None:
        """``open_db`` makes the write connection on the thread (and applies migrations)."""
        self._settings = settings
        self._open_db = open_db
        self._on_commit = on_commit
        self._batch_max = settings.write_batch_max
        self._queue_max = settings.write_queue_max
        self._queue: list[_Pending[Any]] = []
        # The batch on the thread, and a future done once its outcome is handed out.
        self._batch: list[_Pending[Any]] = []
        self._inflight: asyncio.Future[None] | None = None
        self._refusal: str | None = "the store is not open"  # None: writes are accepted
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._db: WriteDb | None = None
        # Why the last batch found the database taking no writes (errors.Unwritable), or None
        self.unwritable: str | None = None

    @property
    def accepting(self) -> bool:
        return self._refusal is None

    # -- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Start the thread, connect and apply pending migrations on it."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        try:
            self._db = await asyncio.wrap_future(executor.submit(self._open_on_thread))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._loop, self._executor = asyncio.get_running_loop(), executor
        self._refusal = None

    def _open_on_thread(self) -> WriteDb:
        self._thread = threading.current_thread()  # to tell, before each batch, that it runs
        return self._open_db(self._settings)

    async def drain(self, deadline: float) -> None:
        """Refuse new writes and finish the queued ones until ``deadline`` (loop time)."""
        if self._refusal is None:
            self._refusal = SHUTTING_DOWN
        while self._inflight is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(self._inflight)
            except TimeoutError:
                # The batch may still commit on the thread (a resume then finds it in the
                # store): its callers are told the outcome is unknown.
                _fail(self._batch, f"{SHUTTING_DOWN}: this write may or may not be committed")
                break
        _fail(self._queue, SHUTTING_DOWN)
        self._queue = []

    async def close(self) -> None:
        """Close the write connection on its thread (checkpointing what is left, if it is
        the last connection) and let the thread end. Call ``drain`` first."""
        executor, db, thread = self._executor, self._db, self._thread
        self._executor, self._db = None, None
        if executor is None or db is None:
            return
        closing: Future[None] | None = None
        if thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # shut down already
                closing = executor.submit(db.close)  # after a batch still running, if any
        executor.shutdown(wait=False)  # the thread ends once its last job has run
        if closing is None:  # no thread to close it on: from here, where the driver allows
            with contextlib.suppress(Exception):  # sqlite3 refuses; its GC closes it
                db.close()
        if closing is not None and self._inflight is None:
            try:
                await asyncio.wait_for(asyncio.wrap_future(closing), CLOSE_WAIT_S)
            except TimeoutError:
                log.warning("closing the database took over %s s; left to finish", CLOSE_WAIT_S)

    # -- writes -------------------------------------------------------------------------

    async def write(self, op: WriteOp[T]) -> T:
        """Queue a write; returns its result once committed (and its events published)."""
        if self._refusal is not None:
            raise Unavailable(self._refusal)
        if len(self._queue) >= self._queue_max:
            raise Unavailable("too many writes are waiting for the store", retry_after_s=1)
        loop = self._loop
        assert loop is not None  # set with the refusal cleared
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Pending(op, future))
        if self._inflight is None:
            self._submit(loop)
        return await future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the next batch of queued writes to the thread, as one job."""
        limit = self._batch_max
        batch, self._queue = self._queue[:limit], self._queue[limit:]
        self._batch, self._inflight = batch, loop.create_future()
        executor, thread, db = self._executor, self._thread, self._db
        try:
            if executor is None or thread is None or db is None or not thread.is_alive():
                raise RuntimeError(THREAD_GONE)
            job = executor.submit(commit_batch, db, [p.op for p in batch])
        except RuntimeError:  # shut down or dead: a job queued now would wait forever
            if self._refusal is None:
                log.error("%s: every write fails until the store is reopened", THREAD_GONE)
                self._refusal = THREAD_GONE
            batch += self._queue
            self._queue = []
            self._committed(batch, None, Unavailable(THREAD_GONE))
            return
        job.add_done_callback(partial(self._hand_back, loop, batch))

    def _hand_back(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[Any]], job: Future[Outcome]
    ) -> None:
        """On the thread, right after the job (on the loop if the job was cancelled)."""
        outcome: Outcome | None = None
        error: BaseException | None
        if job.cancelled():  # the executor was shut down with the job still queued
            error = Unavailable(THREAD_GONE)
        else:
            error = job.exception()
            if error is None:
                outcome = job.result()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits this
            loop.call_soon_threadsafe(self._committed, batch, outcome, error)

    def _committed(
        self,
        batch: list[_Pending[Any]],
        outcome: Outcome | None,
        error: BaseException | None,
    ) -> None:
        """On the loop: a batch's outcome, handed out; then the next batch goes."""
        inflight, self._inflight = self._inflight, None
        self._batch = []
        try:
            if isinstance(error, Unwritable):
                if self.unwritable is None:  # once, not per batch
                    log.error("%s; writes are answered 503 until it can", error.message)
                self.unwritable = error.reason
            elif outcome is not None and self.unwritable is not None:
                log.warning("the database takes writes again")
                self.unwritable = None
            if outcome is None:
                if isinstance(error, Unavailable):
                    _fail(batch, error.message, error.retry_after_s or 1)
                else:  # the whole transaction failed: nothing committed, unless the
                    # connection was lost in its COMMIT's round trip (nobody can tell then)
                    log.error("write batch of %d failed", len(batch), exc_info=error)
                    _fail(batch, f"the store failed: {error}")
            else:
                results, events = outcome
                if events:
                    try:
                        self._on_commit(events)
                    except Exception:
                        log.exception("publishing committed events failed")
                for pending, (ok, value) in zip(batch, results, strict=True):
                    if pending.future.done():
                        continue  # the caller went away; its write is committed all the same
                    if ok:
                        pending.future.set_result(value)
                    else:
                        pending.future.set_exception(value)
        finally:
            if inflight is not None and not inflight.done():
                inflight.set_result(None)
            if self._queue and self._loop is not None:
                self._submit(self._loop)
