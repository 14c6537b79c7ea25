"""The idempotent consumer: remember each message id in the same transaction as its effect.

A consumer that commits offsets after processing (at least once) sees some messages
twice after a crash or a rebalance, and a producer that retries, or an outbox relay
that re-publishes, puts the same message on the log twice with *different* offsets.
Deduplicating by the message's own id, in the database transaction that applies the
effect, makes every repeat harmless::

    orders = lab.store("shipping")
    ensure_table(orders)
    apply_once(orders, event.value["id"],
               lambda tx: tx.execute("INSERT INTO shipments VALUES (?)", (event.value["id"],)))

Either both the effect and the id are committed, or neither is: a crash between them
cannot leave an effect without its mark (applied twice later) or a mark without its
effect (lost).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from labsupport.runtime.errors import require

TABLE = "processed_messages"


def ensure_table(store: Any) -> None:
    """Create the table of processed message ids in ``store`` (a :class:`~labsupport.runtime.stores.Store`)."""
    store.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (message_id TEXT PRIMARY KEY)")


def apply_once(store: Any, message_id: str, effect: Callable[[sqlite3.Connection], Any]) -> bool:
    """Run ``effect(tx)`` unless ``message_id`` was applied before; True if it ran.

    The id is inserted in the same transaction as the effect; if ``effect`` raises,
    neither is kept, and the message can be tried again.
    """
    require(isinstance(message_id, str) and message_id != "",
            f"message_id must be a non-empty string, got {message_id!r}.",
            "use the id the producer put in the message, e.g. event.value['id']")
    with store.transaction() as tx:
        if tx.execute(f"INSERT OR IGNORE INTO {TABLE} VALUES (?)", (message_id,)).rowcount == 0:
            return False
        effect(tx)
        return True


def applied_count(store: Any) -> int:
    """How many distinct message ids ``store`` has applied."""
    return int(store.scalar(f"SELECT COUNT(*) FROM {TABLE}") or 0)
