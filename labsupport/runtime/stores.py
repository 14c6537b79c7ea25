"""Each service's own database: one SQLite file per store, under ``.lab/stores/<run>/``.

A store is the state one service owns (orders, payments, a read model). It is a
real file, so a worker thread and the lab's loop see the same data, a crash
loses only what was not committed, and a learner can open it with any SQLite tool::

    orders = lab.store("orders")
    orders.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, state TEXT)")
    with orders.transaction() as tx:
        tx.execute("INSERT INTO orders VALUES (?, ?)", ("o-1", "PENDING"))
    orders.query("SELECT state FROM orders WHERE id = ?", ("o-1",))   # [('PENDING',)]

The lab deletes its stores' folder when it closes.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labsupport.runtime.errors import LabError, require
from labsupport.runtime.settings import state_dir


def stores_dir(run_id: str) -> Path:
    """The folder holding one lab's stores (``.lab/stores/<run_id>``)."""
    return state_dir() / "stores" / run_id


class Store:
    """One SQLite database file, safe to use from several threads (one writer at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.RLock()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; returns the number of rows changed."""
        with self.transaction() as tx:
            return tx.execute(sql, params).rowcount

    def create(self, *statements: str) -> Store:
        """Run schema statements (each may hold several, separated by ``;``) in one transaction.

        Returns the store, so ``store = lab.store("orders").create(SCHEMA)`` reads naturally.
        """
        with self.transaction() as tx:
            for text in statements:
                for statement in text.split(";"):
                    if statement.strip():
                        tx.execute(statement)
        return self

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a ``SELECT``."""
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (``None`` if there is none)."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together, or none do if the block raises."""
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._conn is None:
            raise LabError(f"The store {self.path.stem!r} is closed.",
                           "create a new lab and ask it for the store again")

    def close(self) -> None:
        """Close the connection (the file stays until the lab closes)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Store {self.path.stem} at {self.path}>"


def remove_orphans() -> list[Path]:
    """Delete the store folders of kernels that ended without closing their lab."""
    removed = []
    for folder in (state_dir() / "stores").glob("*-*"):
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Stores:
    """The stores of one lab, by name; removed from disk when the lab closes."""

    def __init__(self, run_id: str) -> None:
        self.folder = stores_dir(run_id)
        self.open: dict[str, Store] = {}
        remove_orphans()

    def get(self, name: str, fresh: bool = False) -> Store:
        """The store called ``name`` (created empty on first use).

        ``fresh=True`` closes and deletes an existing store of that name first, so an
        experiment that sets itself up again starts from an empty database.
        """
        require(isinstance(name, str) and name.isidentifier(),
                f"A store name is a simple word, got {name!r}.", "e.g. 'orders'")
        if fresh and name in self.open:
            old = self.open.pop(name)
            old.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{old.path}{suffix}").unlink(missing_ok=True)
        if name not in self.open:
            self.open[name] = Store(self.folder / f"{name}.sqlite")
        return self.open[name]

    def close(self) -> None:
        """Close every store and delete the folder."""
        for store in self.open.values():
            store.close()
        self.open.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
