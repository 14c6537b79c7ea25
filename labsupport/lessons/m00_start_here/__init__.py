"""Module 00 · Start here: a first live widget."""
from __future__ import annotations

from labsupport.lessons.m00_start_here.explorer import LatencyExplorer

__all__ = [
    "LatencyExplorer",
]
