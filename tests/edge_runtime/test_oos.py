"""``edge_runtime.oos``: the out-of-scope detector the device runs (fitted by ``cloud.oos``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.errors import ManifestError
from edge_runtime.oos import OutOfScope


def _detector(rng: np.random.Generator) -> tuple[OutOfScope, np.ndarray]:
    from cloud.oos import fit_detector

    centers = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    y = np.repeat([0, 1], 200)
    train = centers[y] + rng.normal(0, 0.5, (400, 3))
    val = centers[np.repeat([0, 1], 100)] + rng.normal(0, 0.5, (200, 3))
    detector, fit = fit_detector(train, y, 2, val, flag_rate=0.01)
    return detector, val


def test_a_vector_far_from_every_class_is_flagged_and_one_near_a_class_is_not():
    rng = np.random.default_rng(0)
    detector, val = _detector(rng)
    # Given the threshold set on validation vectors: about 1% of them lie beyond it
    assert (detector.flags(val).mean()) == pytest.approx(0.01, abs=0.006)
    # Then vectors near a class mean pass and far ones are flagged, whatever their direction
    assert not detector.flags(np.array([[4.1, 0.2, 0.0], [0.1, 3.8, -0.2]])).any()
    assert detector.flags(np.array([[0.0, 0.0, 9.0], [-6.0, -6.0, 0.0], [2.0, 2.0, 4.0]])).all()
    # and the score is the squared Mahalanobis distance to the nearest mean (not the Euclidean one)
    x = np.array([4.0, 0.0, 1.0])
    L = detector.projection.astype(np.float64)
    precision, means = L @ L.T, detector.means.astype(np.float64) @ np.linalg.inv(L)
    expected = min(float((x - m) @ precision @ (x - m)) for m in means)
    assert detector.scores(x[None, :])[0] == pytest.approx(expected, rel=1e-4)
    assert expected > float(np.sum((x - means[0]) ** 2)), "one unit off-axis counts more than its Euclidean 1"


def test_the_bundle_entry_is_checked(tmp_path, tiny_bundle):
    from cloud.oos import save_detector
    from edge_runtime.bundle import Bundle, write_bundle

    detector, _ = _detector(np.random.default_rng(1))
    bundle, _ = tiny_bundle
    m = bundle.manifest
    npz = save_detector(detector, tmp_path / "oos.npz")
    files = {rel: bundle.path_of(rel) for rel in m.files}

    def write(entry, extra_files=None):
        return write_bundle(tmp_path / "b", files={**files, **(extra_files or {})}, name=m.name, version=m.version,
                            labels=m.labels, max_length=m.max_length, tokenizer=m.tokenizer, backends=m.backends,
                            extra={"out_of_scope": entry})

    # a detector with a class mean per label... the tiny bundle has more labels than the 2 fitted here
    with pytest.raises(ManifestError, match="class means for"):
        OutOfScope.from_bundle(write(detector.to_entry("out_of_scope.npz"), {"out_of_scope.npz": npz}))
    with pytest.raises(ManifestError, match="is not listed in files"):
        OutOfScope.from_bundle(write(detector.to_entry("missing.npz")))
    with pytest.raises(ManifestError, match="method 'mahalanobis'"):
        OutOfScope.from_bundle(write({"method": "energy"}))
    assert OutOfScope.from_bundle(Bundle.load(bundle.root)) is None
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["out_of_scope"] == {"method": "energy"}
