"""The sensitivity set beyond the labelled training images: unlabeled images pooled into
Eq. 6, and how well the set covers the tested classes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from opnp.pipeline.ablations import predicted_class_counts, sensitivity_coverage
from opnp.sensitivity import parameter_sensitivity, pooled_parameter_sensitivity


def _data(seed=0, n=(40, 25), d=6, c=4):
    rng = np.random.default_rng(seed)
    sources = [np.maximum(rng.normal(size=(k, d)), 0) for k in n]
    return sources, rng.normal(size=(c, d)), rng.normal(size=c)


def test_pooled_sensitivity_equals_one_stacked_set():
    sources, w, b = _data()
    stacked = np.concatenate(sources)
    assert np.allclose(
        pooled_parameter_sensitivity(sources, w, b),
        parameter_sensitivity(stacked, w, b),
        atol=1e-14,
    )
    rows = np.array([0, 3, 39, 40, 64])  # rows of both sources
    assert np.allclose(
        pooled_parameter_sensitivity(sources, w, b, rows=rows),
        parameter_sensitivity(stacked[rows], w, b),
        atol=1e-14,
    )
    with pytest.raises(ValueError, match="below 65"):
        pooled_parameter_sensitivity(sources, w, b, rows=[65])


def test_predicted_class_counts_count_the_chosen_rows_of_every_source():
    a = np.eye(3)[[0, 0, 1]]  # predicted 0, 0, 1
    b = np.eye(3)[[2, 2]]  # predicted 2, 2
    assert predicted_class_counts([a, b], [0, 2, 3, 4], 3).tolist() == [1, 1, 2]
    assert predicted_class_counts([a, b], [0, 1], 3).tolist() == [2, 0, 0]


def test_coverage_measures_what_the_sensitivity_set_misses():
    counts = np.array([5, 0, 3, 0])
    sens = np.zeros((4, 10))
    sens[0] = 1.0  # the most sensitive weights all lie in class 0's row
    cover = sensitivity_coverage(counts, [0, 1, 1, 3], sens, top_percent=10)
    assert cover["test_images_covered"] == 25.0  # only the class-0 image
    assert cover["test_classes_covered"] == pytest.approx(100 / 3)
    assert cover["top_weights_in_test_rows"] == 100.0
    assert cover["test_rows_share"] == 75.0
    assert cover["sensitivity_classes_predicted"] == 2
    cover = sensitivity_coverage(counts, [1, 3], sens, top_percent=10)
    assert cover["test_images_covered"] == 0.0 and cover["top_weights_in_test_rows"] == 0.0


def _config():
    from pathlib import Path

    import yaml

    return yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "config" / "config.yaml").read_text()
    )


def test_unlabeled_sets_are_checked_before_any_job():
    from opnp.pipeline.config import ConfigError, check_config

    cfg = _config()
    cfg["sensitivity"]["unlabeled"] = ["nope"]
    with pytest.raises(ConfigError, match="sensitivity.unlabeled: dataset 'nope'"):
        check_config(cfg)
    cfg["sensitivity"]["unlabeled"] = ["digits-test"]
    with pytest.raises(ConfigError, match="'digits-test' is also an id or ood set"):
        check_config(cfg)
    cfg["datasets"]["extra"] = {"source": "builtin", "builder": "uniform_noise"}
    cfg["sensitivity"].update(unlabeled=["extra"], reduction="batch")
    with pytest.raises(ConfigError, match="needs sensitivity.reduction: per_sample"):
        check_config(cfg)
    cfg["sensitivity"]["reduction"] = "per_sample"
    check_config(cfg)


def test_unlabeled_sets_must_share_no_image_with_validation_or_test():
    from opnp.data.splits import split_pairs

    roles = {
        "id_train": "tr",
        "id_val": "va",
        "id_test": "te",
        "ood_val": ["ov"],
        "ood_test": ["ot"],
    }
    pairs = {(a, b) for a, _, b, _ in split_pairs({**roles, "sensitivity": ["un"]})}
    assert {("un", "va"), ("un", "te"), ("un", "ov"), ("un", "ot")} <= pairs
    assert ("un", "tr") not in pairs  # joining the training images is what it is for
    assert not any("un" in p for p in split_pairs(roles))


def test_predicted_class_counts_read_the_logits_chunk_by_chunk():
    """All 1.28M ImageNet rows at once would copy 5 GB of logits: the rows are read in
    chunks of DEFAULT_CHUNK_ROWS, with the same counts."""
    from opnp._validation import DEFAULT_CHUNK_ROWS

    class Recording(np.ndarray):
        largest = 0

        def __getitem__(self, key):
            if isinstance(key, np.ndarray):
                Recording.largest = max(Recording.largest, len(key))
            return np.asarray(self).__getitem__(key)

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3 * DEFAULT_CHUNK_ROWS + 5, 4))
    rows = np.arange(1, len(logits), 1)
    counts = predicted_class_counts([logits.view(Recording)], rows, 4)
    assert counts.tolist() == np.bincount(logits[rows].argmax(1), minlength=4).tolist()
    assert 0 < Recording.largest <= DEFAULT_CHUNK_ROWS


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_predicted_class_counts_drop_the_logits_pages_they_read(tmp_path):
    """The logits' memory-map pages of each chunk are dropped after it: counting a 1 %
    sample of ImageNet's 5 GB of logits kept the pages it read resident in the job before
    (docs/scaling.md)."""
    from memory_helpers import resident_pages

    logits = np.random.default_rng(0).normal(size=(16384, 256)).astype(np.float32)  # 16 MiB
    np.save(tmp_path / "logits.npy", logits)
    memmap = np.load(tmp_path / "logits.npy", mmap_mode="r")
    rows = np.arange(0, len(logits), 3)
    counts = predicted_class_counts([memmap], rows, 256)
    assert counts.sum() == len(rows)
    assert resident_pages(memmap) < logits.nbytes // 4096 // 4
