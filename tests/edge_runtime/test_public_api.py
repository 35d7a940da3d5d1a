"""Every edge_runtime package pins its public names: nothing leaks or disappears by accident."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import edge_runtime

PINNED = {
    "edge_runtime.backends": ["Backend", "BackendName", "load_backend"],
    "edge_runtime.bench": ["BenchResult", "UTTERANCES", "check_budget", "load_budgets", "main", "run_bench"],
    "edge_runtime.service": [
        "ConfigError", "ErrorCode", "FakeTransport", "IntentService", "IpcTarget", "Message", "MicroBatcher",
        "OverloadedError", "Published", "Request", "RequestError", "ServiceConfig", "ServiceError",
        "ShuttingDownError", "Topics", "Transport", "TransportClosedError", "TransportError", "TransportKind",
        "TransportUnavailableError", "decode_request", "encode_error", "encode_reply", "from_sources", "serve"],
    "edge_runtime.service.transports": ["ConnectHandler", "FakeTransport", "Message", "MessageHandler", "Published",
                                        "Transport"],
    "edge_runtime.telemetry": ["CONFIDENCE_BINS", "DriftAlert", "DriftMonitor", "DriftThresholds", "LENGTH_BINS",
                               "Spool", "SpoolError", "TelemetryWindow", "js_distance", "psi", "reference_stats"],
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_subpackage_exports_exactly_its_pinned_names(name):
    package = importlib.import_module(name)
    assert sorted(package.__all__) == sorted(PINNED[name])
    assert all(hasattr(package, attr) for attr in package.__all__)


def test_every_subpackage_is_pinned():
    found = {m.name for m in pkgutil.walk_packages(edge_runtime.__path__, "edge_runtime.") if m.ispkg}
    assert found == set(PINNED), "a new subpackage needs its __all__ pinned here"


def test_signature_errors_are_part_of_the_top_level_api():
    from edge_runtime.errors import BundleError

    assert "SignatureError" in edge_runtime.__all__ and issubclass(edge_runtime.SignatureError, BundleError)
