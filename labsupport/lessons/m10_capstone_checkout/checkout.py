"""Module 10 · The capstone checkout: the pieces both designs share.

An online shop's checkout touches three services, each with its own SQLite store
(``lab.store``), no shared database:

* **order**: ``orders`` (PENDING, then CONFIRMED or FAILED; when it was placed, answered,
  confirmed, and what the customer was told);
* **payment**: ``charges`` (one row per charge; an ``Idempotency-Key`` makes a repeat
  return the first charge instead of charging again; a refund marks the order's charges);
* **inventory**: ``reservations`` (one per order, so a repeat changes nothing).

:mod:`labsupport.lessons.m10_capstone_checkout.checkout_sync` wires them with HTTP calls (the customer waits for
everything) and :mod:`labsupport.lessons.m10_capstone_checkout.checkout_events` with events on the broker (the
customer gets **202 Accepted**). Both get the same orders (:func:`order_times`,
:func:`send_orders`) and the same chaos (:mod:`labsupport.lessons.m10_capstone_checkout.chaos`), and are judged by the
same :class:`Scoreboard`: success rate, user-facing p50/p99, end-to-end confirmation time,
orders lost, stuck, charged twice, and time to recover.

All times are model milliseconds / seconds (wall time divided by ``LAB_TIME_SCALE``),
except Kafka's own waits, which are wall time (see module 05).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport.kit.dashboard import PALETTE
from labsupport.kit.evidence import Estimate, share
from labsupport.runtime.errors import require
from labsupport.runtime.latency import LatencyModel, Normal
from labsupport.runtime.load import arrival_times, fire
from labsupport.runtime.metrics import percentile
from labsupport.runtime.settings import model_clock

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.stores import Store

PAYMENT, INVENTORY = Normal(30, 8), Normal(50, 10)
"""The services' own work per order on a normal day (model ms)."""
ORDER_SCHEMA = """CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL, state TEXT NOT NULL, told TEXT,
    placed_ms REAL, answered_ms REAL, confirmed_ms REAL)"""
PAYMENT_SCHEMA = """CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, key TEXT,
    amount INTEGER NOT NULL, refunded INTEGER NOT NULL DEFAULT 0, at_ms REAL);
    CREATE UNIQUE INDEX IF NOT EXISTS charge_key ON charges(key) WHERE key IS NOT NULL"""
INVENTORY_SCHEMA = """CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY, at_ms REAL)"""
OUTCOMES = ("confirmed", "accepted", "failed")
"""What a customer hears: 200 confirmed now, 202 accepted (confirmed later), or an error."""
CALM_MARGIN_S = 1.0
"""A request sent this many model seconds before a chaos window may still meet it."""
OUTCOME_COLOURS = {"confirmed": PALETTE[2], "accepted": PALETTE[0], "failed": PALETTE[3]}


def now_ms() -> float:
    """Model milliseconds on a monotonic clock (time stamps within one run)."""
    return model_clock() * 1000


# ----- each service's local transactions (both designs use these) -------------------------------
def charge(store: Store, order_id: str, amount: int, key: str | None = None) -> int:
    """Charge ``amount`` for ``order_id``; returns the charge's number.

    With an idempotency ``key`` a repeat returns the first charge's number and charges
    nothing; without one every call is a new charge (a retry charges twice).
    """
    with store.transaction() as tx:
        if key is not None:
            row = tx.execute("SELECT seq FROM charges WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return int(row[0])
        cur = tx.execute("INSERT INTO charges (order_id, key, amount, at_ms) VALUES (?, ?, ?, ?)",
                         (order_id, key, amount, now_ms()))
        return int(cur.lastrowid or 0)


def refund(store: Store, order_id: str) -> int:
    """Refund every charge of ``order_id`` (a compensation; repeating it changes nothing)."""
    return store.execute("UPDATE charges SET refunded = 1 WHERE order_id = ? AND refunded = 0",
                         (order_id,))


def reserve(store: Store, order_id: str) -> bool:
    """Reserve the order's item; True the first time, False for a repeat (changes nothing)."""
    return store.execute("INSERT OR IGNORE INTO reservations VALUES (?, ?)",
                         (order_id, now_ms())) == 1


def place(store: Store, order: dict[str, Any]) -> None:
    """Record a new order as PENDING (a repeat of the same id changes nothing)."""
    store.execute("INSERT OR IGNORE INTO orders (id, amount, state, placed_ms) "
                  "VALUES (?, ?, 'PENDING', ?)", (order["order_id"], order["amount"], now_ms()))


def set_state(store: Store, order_id: str, state: str) -> None:
    """Move an order to ``state``; CONFIRMED stamps ``confirmed_ms`` and is final."""
    store.execute("UPDATE orders SET state = ?, confirmed_ms = CASE WHEN ? = 'CONFIRMED' "
                  "THEN ? ELSE confirmed_ms END WHERE id = ? AND state != 'CONFIRMED'",
                  (state, state, now_ms(), order_id))


def tell(store: Store, order_id: str, told: str) -> None:
    """Record what the customer was told (``confirmed``, ``accepted``, ``failed``)."""
    store.execute("UPDATE orders SET told = ?, answered_ms = ? WHERE id = ?",
                  (told, now_ms(), order_id))


# ----- the three services of one design --------------------------------------------------------------
class CheckoutShop:
    """order, payment and inventory services and their stores, names prefixed by ``prefix``."""

    def __init__(self, lab: Lab, prefix: str, payment: LatencyModel | float = PAYMENT,
                 inventory: LatencyModel | float = INVENTORY,
                 routes: dict[str, dict[str, Any]] | None = None) -> None:
        require(prefix.isidentifier(), f"prefix must be a simple word, got {prefix!r}.",
                "e.g. 'sync_'")
        routes = routes or {}
        self.lab, self.prefix = lab, prefix
        self.orders = lab.store(f"{prefix}orders").create(ORDER_SCHEMA)
        self.charges = lab.store(f"{prefix}payment").create(PAYMENT_SCHEMA)
        self.stock = lab.store(f"{prefix}inventory").create(INVENTORY_SCHEMA)
        self.payment = lab.service(f"{prefix}payment", payment, routes=routes.get("payment"))
        self.inventory = lab.service(f"{prefix}inventory", inventory,
                                     routes=routes.get("inventory"))
        self.order = lab.service(f"{prefix}order", 0, routes=routes.get("order"))
        self.normal = {"payment": self.payment.latency, "inventory": self.inventory.latency}

    def topic_name(self, name: str) -> str:
        """A topic name for this shop: ``<prefix>.<name>`` (topic names take no ``_``)."""
        return f"{self.prefix.strip('_').replace('_', '-')}.{name}"

    def slow_inventory(self, factor: float) -> None:
        """Inventory's work takes ``factor`` times as long (1 = normal again)."""
        base = self.normal["inventory"]
        self.inventory.set(latency=base if factor == 1 else Scaled(base, factor))

    def state_of(self, ids: Sequence[str]) -> dict[str, str]:
        """Each order's state (``missing`` when the order service never recorded it)."""
        rows = dict(self.orders.query("SELECT id, state FROM orders"))
        return {oid: rows.get(oid, "missing") for oid in ids}

    def confirmed_ms(self, ids: Sequence[str]) -> dict[str, float]:
        """When each confirmed order in ``ids`` was confirmed (model ms, :func:`now_ms`)."""
        wanted = set(ids)
        return {oid: at for oid, at in self.orders.query(
            "SELECT id, confirmed_ms FROM orders WHERE state = 'CONFIRMED'") if oid in wanted}

    def end_to_end_ms(self, ids: Sequence[str]) -> dict[str, float]:
        """Placed -> confirmed (model ms) of each confirmed order in ``ids``."""
        placed = dict(self.orders.query("SELECT id, placed_ms FROM orders"))
        return {oid: at - placed[oid] for oid, at in self.confirmed_ms(ids).items()
                if oid in placed}

    def double_charged(self, ids: Sequence[str]) -> int:
        """Orders in ``ids`` with more than one charge that was not refunded."""
        wanted = set(ids)
        return sum(oid in wanted for oid, in self.charges.query(
            "SELECT order_id FROM charges WHERE refunded = 0 GROUP BY order_id "
            "HAVING COUNT(*) > 1"))

    def charged_unconfirmed(self, ids: Sequence[str]) -> int:
        """Orders in ``ids`` holding a charge although they are not confirmed."""
        states = self.state_of(ids)
        charged = {oid for oid, in self.charges.query(
            "SELECT DISTINCT order_id FROM charges WHERE refunded = 0")}
        return sum(oid in charged and states[oid] != "CONFIRMED" for oid in ids)


@dataclass(frozen=True)
class Scaled(LatencyModel):
    """``base`` latency times ``factor`` (the chaos's slow inventory)."""

    base: LatencyModel
    factor: float

    def sample(self, rng: random.Random) -> float:
        return self.base.sample(rng) * self.factor

    def mean_ms(self) -> float:
        return self.base.mean_ms() * self.factor

    def __str__(self) -> str:
        return f"{self.base} x{self.factor:g}"


# ----- the same orders for both designs -------------------------------------------------------------
def order_times(rate: float, seconds: float, seed: int) -> list[float]:
    """Send times (model s) of a seeded Poisson stream of ``rate`` orders/s for ``seconds``."""
    require(isinstance(rate, (int, float)) and 0 < rate <= 20,
            f"rate must be above 0 and at most 20 orders/s, got {rate!r}.",
            "the course's consumers keep up with about 10 orders/s")
    require(isinstance(seconds, (int, float)) and 0 < seconds <= 120,
            f"seconds must be above 0 and at most 120, got {seconds!r}.")
    return arrival_times(rate, seconds, poisson=True, seed=f"orders:{seed}")


@dataclass(frozen=True)
class Sent:
    """One checkout request: when it was sent (model s since the run began), how long the
    customer waited (model ms, from the scheduled time), the HTTP status, the order id."""

    t: float
    ms: float
    status: int
    order_id: str

    @property
    def outcome(self) -> str:
        """``confirmed`` (200), ``accepted`` (202) or ``failed`` (anything else)."""
        return {200: "confirmed", 202: "accepted"}.get(self.status, "failed")

    @property
    def ok(self) -> bool:
        return self.status in (200, 202)


def new_orders(run: str, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` orders with ids ``<run>-1`` ... and seeded amounts."""
    rng = random.Random(f"amounts:{seed}")
    return [{"order_id": f"{run}-{i + 1}", "amount": rng.randint(5, 120)} for i in range(count)]


async def send_orders(lab: Lab, url: str, times: Sequence[float],
                      orders: Sequence[dict[str, Any]], start: float,
                      timeout_ms: float = 10_000) -> list[Sent]:
    """POST ``orders[i]`` to ``url`` at model time ``times[i]`` after ``start`` (the loop's
    clock, shared by every design), open loop (:func:`labsupport.runtime.load.fire`); latency counts
    from the scheduled time (no coordinated omission)."""
    shots = await fire(lab.session, url, times, method="POST", body=lambda i, t: orders[i],
                       timeout_ms=timeout_ms, start=start)
    return [Sent(s.t, s.ms, s.status, orders[s.index]["order_id"]) for s in shots]


# ----- the scoreboard -----------------------------------------------------------------------------------
@dataclass
class Scoreboard:
    """What one design did with one run's orders (times in model ms, recovery in model s)."""

    design: str
    sent: list[Sent]
    states: dict[str, str]
    end_to_end_ms: dict[str, float]
    double_charged: int
    left_in_log: int
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    recover_s: float = math.nan
    payment_calls: int = 0

    @property
    def success_rate(self) -> float:
        """Share of checkouts answered 200 or 202 (the customer heard "yes")."""
        return sum(s.ok for s in self.sent) / len(self.sent) if self.sent else math.nan

    def p(self, q: float, outcome: str | None = None, during: str | None = None) -> float:
        """The ``q``-th percentile of what customers waited (every answer, model ms),
        only ``outcome`` answers and only those sent ``during`` a chaos window if given
        (``"calm"``: outside every window and the second before it; ``"before"``: before
        the first window)."""
        return percentile([s.ms for s in self.within(during)
                           if outcome is None or s.outcome == outcome], q)

    def within(self, during: str | None) -> list[Sent]:
        """The requests sent inside the window called ``during`` (all when None)."""
        if during is None:
            return self.sent
        if during == "before":   # before the first window (and the second before it)
            first = min([a for _, a, _ in self.windows] or [math.inf])
            return [s for s in self.sent if s.t < first - CALM_MARGIN_S]
        if during == "calm":   # a request sent just before a window meets it: 1 s margin
            return [s for s in self.sent
                    if not any(a - CALM_MARGIN_S <= s.t < b for _, a, b in self.windows)]
        spans = [(a, b) for name, a, b in self.windows if name == during]
        require(spans, f"no chaos window called {during!r}.",
                f"use one of: calm, {', '.join(n for n, _, _ in self.windows)}")
        return [s for s in self.sent if any(a <= s.t < b for a, b in spans)]

    def waits(self, during: str | None = None) -> list[float]:
        """What each customer sent ``during`` waited (model ms), in sending order: two
        designs given the same orders line up request by request (for paired ratios)."""
        return [s.ms for s in self.within(during)]

    def said_yes(self, during: str | None = None) -> Estimate:
        """The share of checkouts sent ``during`` answered yes, with Wilson's interval."""
        sent = self.within(during)
        return share(sum(s.ok for s in sent), len(sent))

    def e2e_samples(self, during: str | None = None) -> list[float]:
        """Placed -> confirmed (model ms) of each confirmed order sent ``during``."""
        return [self.end_to_end_ms[s.order_id] for s in self.within(during)
                if s.order_id in self.end_to_end_ms]

    def success_during(self, during: str) -> float:
        """Share of checkouts answered yes among those sent during ``during``."""
        sent = self.within(during)
        return sum(s.ok for s in sent) / len(sent) if sent else math.nan

    @property
    def accepted(self) -> list[str]:
        """Orders whose customer heard yes (200 or 202)."""
        return [s.order_id for s in self.sent if s.ok]

    @property
    def lost(self) -> int:
        """Accepted orders not confirmed, with nothing left in any log to finish them."""
        return 0 if self.left_in_log else self._unconfirmed

    @property
    def stuck(self) -> int:
        """Accepted orders not confirmed while messages still wait in a log."""
        return self._unconfirmed if self.left_in_log else 0

    @property
    def _unconfirmed(self) -> int:
        return sum(self.states.get(oid) != "CONFIRMED" for oid in self.accepted)

    @property
    def failed(self) -> int:
        """Checkouts answered with an error (the customer was turned away)."""
        return sum(not s.ok for s in self.sent)

    def e2e(self, q: float, during: str | None = None) -> float:
        """The ``q``-th percentile of placed -> confirmed (model ms) of the orders sent
        ``during`` (all when None)."""
        ids = {s.order_id for s in self.within(during)}
        return percentile([v for k, v in self.end_to_end_ms.items() if k in ids], q)

    def row(self) -> dict[str, Any]:
        """The scoreboard as one dict (for a table)."""
        return {"design": self.design, "orders": len(self.sent),
                "success": self.success_rate, "p50_ms": self.p(50), "p99_ms": self.p(99),
                "e2e_p50_ms": self.e2e(50), "e2e_p99_ms": self.e2e(99), "failed": self.failed,
                "lost": self.lost, "stuck": self.stuck, "charged_twice": self.double_charged,
                "recover_s": self.recover_s}

    def summary(self) -> str:
        """One plain line."""
        return (f"{self.design}: {self.success_rate:.1%} said yes, p50 {self.p(50):.0f} ms, "
                f"p99 {self.p(99):.0f} ms; confirmed after {self.e2e(50):.0f} ms (median); "
                f"{self.failed} turned away, {self.lost} lost, {self.stuck} stuck, "
                f"{self.double_charged} charged twice; recovered {self.recover_s:.1f} s after "
                "the chaos")


def scoreboard_table(boards: Sequence[Scoreboard]) -> str:
    """A fixed-width table of several scoreboards (what the notebook prints)."""
    head = (f"{'design':<16}{'orders':>7}{'said yes':>9}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'confirm p50':>12}{'confirm p99':>12}{'failed':>7}{'lost':>5}{'stuck':>6}"
            f"{'2x paid':>8}{'recover s':>10}")
    lines = [head]
    for b in boards:
        r = b.row()
        lines.append(f"{r['design']:<16}{r['orders']:>7}{r['success']:>9.1%}{r['p50_ms']:>8.0f}"
                     f"{r['p99_ms']:>8.0f}{r['e2e_p50_ms']:>12.0f}{r['e2e_p99_ms']:>12.0f}"
                     f"{r['failed']:>7}{r['lost']:>5}{r['stuck']:>6}{r['charged_twice']:>8}"
                     f"{r['recover_s']:>10.1f}")
    return "\n".join(lines)


RECOVERED_STREAK = 5
"""Requests in a row answered normally after which the synchronous path counts as back."""


def sync_recovery_s(sent: Sequence[Sent], chaos_end_s: float, normal_ms: float,
                    streak: int = RECOVERED_STREAK) -> float:
    """Model seconds from the end of the chaos until the synchronous path is normal again:
    the answer time of the last request after the chaos that failed, was deferred (202) or
    took longer than ``normal_ms`` before ``streak`` requests in a row (by send time) were
    answered 200 within ``normal_ms``; 0 when none did. A lone slow answer later on is the
    dependency's everyday tail, not the chaos. ``inf`` when it never answered 200 after the
    chaos at all."""
    after = sorted((s for s in sent if s.t >= chaos_end_s), key=lambda s: s.t)
    if after and not any(s.status == 200 for s in after):
        return math.inf
    bad, run = [], 0
    for s in after:
        if s.status == 200 and s.ms <= normal_ms:
            run += 1
            if run >= streak:
                break
        else:
            run = 0
            bad.append(s.t + s.ms / 1000 - chaos_end_s)
    return max([0.0, *bad])


def drain_recovery_s(sent: Sequence[Sent], confirmed_at_s: dict[str, float],
                     chaos_end_s: float) -> float:
    """Model seconds from the end of the chaos until every order accepted before it was
    confirmed (the backlog drained); ``inf`` if one never was."""
    before = [s.order_id for s in sent if s.ok and s.t < chaos_end_s]
    if any(oid not in confirmed_at_s for oid in before):
        return math.inf
    return max([0.0, *(confirmed_at_s[oid] - chaos_end_s for oid in before)])


# ----- the timeline ----------------------------------------------------------------------------------------
def draw_timeline(ax: Any, board: Scoreboard | None, title: str = "",
                  show_e2e: bool = True) -> None:
    """Each checkout as a dot (x: sent, y: what the customer waited, log scale), coloured
    by outcome; chaos windows shaded; confirmation times as faint crosses for 202s."""
    if board is None:
        ax.text(0.5, 0.5, "press Run", ha="center", va="center", transform=ax.transAxes)
        return
    shades = {"slow inventory": PALETTE[6], "payment down": "#bbbbbb"}
    for name, a, b in board.windows:
        ax.axvspan(a, b, color=shades.get(name, "#dddddd"), alpha=0.35, lw=0, label=name)
    for outcome in OUTCOMES:
        pts = [s for s in board.sent if s.outcome == outcome]
        if pts:
            ax.plot([s.t for s in pts], [max(s.ms, 1.0) for s in pts], "o", markersize=3,
                    color=OUTCOME_COLOURS[outcome], label=f"{outcome} ({len(pts)})")
    if show_e2e:
        t_of = {s.order_id: s.t for s in board.sent}
        later = [(t_of[k], v) for k, v in board.end_to_end_ms.items()
                 if k in t_of and v > 0 and _told(board, k) == "accepted"]
        if later:
            ax.plot([t for t, _ in later], [v for _, v in later], "x", markersize=3,
                    color=PALETTE[5], alpha=0.6, label="confirmed after (202)")
    ax.set_yscale("log")
    ax.set_xlabel("model seconds since the first order")
    ax.set_ylabel("model ms")
    ax.set_title(title or board.design, fontsize=9)
    ax.legend(loc="upper left", fontsize=6, ncol=2)


def _told(board: Scoreboard, order_id: str) -> str:
    for s in board.sent:
        if s.order_id == order_id:
            return s.outcome
    return ""


def timeline_figure(boards: Sequence[Scoreboard]) -> Any:
    """A matplotlib figure with one timeline per design (display it in the notebook)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 2.6 * len(boards)))
    axes = fig.subplots(len(boards), 1, sharex=True, squeeze=False)
    for ax, board in zip(axes[:, 0], boards, strict=True):
        draw_timeline(ax, board)
    fig.tight_layout()
    return fig


def timeline_image(boards: Sequence[Scoreboard]) -> Any:
    """:func:`timeline_figure` as a PNG image the notebook displays (no pyplot needed)."""
    from io import BytesIO

    from IPython.display import Image

    buffer = BytesIO()
    timeline_figure(boards).savefig(buffer, format="png", dpi=80, facecolor="white")
    return Image(buffer.getvalue())
