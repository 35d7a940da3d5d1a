"""``cloud.steps``: the pieces every runner shares - the gate, the calibration order, the registry's metrics."""

from __future__ import annotations

import pytest

from cloud.errors import GateFailed
from cloud.params import GateParams
from cloud.steps import across_classes, gate_result, gate_step, registry_metrics

METRICS = {"fp32": {"accuracy": 0.95, "macro_f1": 0.93}, "int8": {"accuracy": 0.94, "macro_f1": 0.925},
           "agreement": 0.99}


def test_the_gate_judges_macro_f1_accuracy_and_the_int8_drop():
    assert gate_result(METRICS, GateParams(min_macro_f1=0.9, min_accuracy=0.9, max_int8_drop=0.01)).passed
    failed = gate_result(METRICS, GateParams(min_macro_f1=0.95, min_accuracy=0.96, max_int8_drop=0.001))
    assert not failed.passed and len(failed.problems) == 3
    assert "INT8 accuracy 0.9400 is below the threshold 0.9600" in failed.problems
    assert failed.int8_drop == pytest.approx(0.005)
    with pytest.raises(GateFailed, match="quality gate failed: INT8 macro-F1 0.9250 is below the threshold 0.9500"):
        gate_step(METRICS, GateParams(min_macro_f1=0.95))
    assert gate_step(METRICS, GateParams(min_macro_f1=0.9, max_int8_drop=0.01)).to_dict()["passed"] is True


def test_calibration_texts_take_every_class_in_turn():
    rows = [(f"a{i}", "A") for i in range(5)] + [(f"b{i}", "B") for i in range(2)] + [("c0", "C")]
    order = across_classes(rows)
    assert order[:3] == ["a0", "b0", "c0"] and sorted(order) == sorted(t for t, _ in rows)
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]


def test_registry_metrics_keep_the_scores_and_agreement():
    assert registry_metrics(METRICS) == {"fp32": {"accuracy": 0.95, "macro_f1": 0.93, "ci95": None},
                                         "int8": {"accuracy": 0.94, "macro_f1": 0.925, "ci95": None},
                                         "agreement": 0.99}
