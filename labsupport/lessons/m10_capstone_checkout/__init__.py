"""Module 10 · The capstone: a synchronous and an event-driven checkout on the same bad day, and
the decision guide.
"""
from __future__ import annotations

from labsupport.lessons.m10_capstone_checkout.chaos import CRASH, SLOW, ChaosSchedule, SideBySide
from labsupport.lessons.m10_capstone_checkout.checkout import scoreboard_table, timeline_image
from labsupport.lessons.m10_capstone_checkout.checkout_events import EventCheckout, read_status
from labsupport.lessons.m10_capstone_checkout.checkout_sync import SyncCheckout
from labsupport.lessons.m10_capstone_checkout.decision_guide import (
    build_guide,
    external_figures,
    lookup_row,
    measure_lookup,
)

__all__ = [
    "CRASH", "SLOW", "ChaosSchedule", "SideBySide", "scoreboard_table", "timeline_image",
    "EventCheckout", "read_status", "SyncCheckout", "build_guide", "external_figures",
    "lookup_row", "measure_lookup",
]
