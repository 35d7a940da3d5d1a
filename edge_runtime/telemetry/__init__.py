"""Edge telemetry: per-request records aggregated over a window, drift signals against the bundle's
reference statistics, and a bounded on-disk spool for store-and-forward.

Raw texts never leave the device unless sampling is enabled in the service configuration.
"""

from __future__ import annotations

from .drift import DriftAlert, DriftMonitor, DriftThresholds, js_distance, psi
from .spool import Spool, SpoolError
from .stats import CONFIDENCE_BINS, LENGTH_BINS, TelemetryWindow, reference_stats

__all__ = [
    "CONFIDENCE_BINS",
    "LENGTH_BINS",
    "DriftAlert",
    "DriftMonitor",
    "DriftThresholds",
    "Spool",
    "SpoolError",
    "TelemetryWindow",
    "js_distance",
    "psi",
    "reference_stats",
]
