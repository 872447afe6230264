"""The xlsa17 loader: valid files, preprocessing, and malformed inputs with their messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from izf_lib.data import DataError, load_xlsa17
from izf_lib.prepare import BENCHMARK_SHAPES, digit_attributes, prepare_digits

from helpers import AWA1_ATT, DIGITS_DESCRIPTORS, raw_dataset, write_raw


def test_loads_valid_files_with_1_based_indices(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    data = load_xlsa17("TINY", write_raw(tmp_path, fmat, smat), scale_features=False, scale_att=False)
    tv = smat["trainval_loc"].ravel().astype(int) - 1
    np.testing.assert_allclose(data.v_trainval.numpy(), fmat["features"][:, tv].T, rtol=1e-6)
    assert data.y_trainval.tolist() == (fmat["labels"].ravel()[tv] - 1).astype(int).tolist()
    assert data.seen.tolist() == [0, 1, 2, 3] and data.unseen.tolist() == [4, 5]
    assert data.att.shape == (6, 3) and data.class_names[0] == "class0"


def test_scalers_are_fit_on_trainval_only(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    fmat["features"][:, smat["test_unseen_loc"].ravel().astype(int) - 1] += 100.0  # extreme test images
    data = load_xlsa17("TINY", write_raw(tmp_path, fmat, smat))
    assert torch.isclose(data.v_trainval.min(0).values, torch.zeros(12), atol=1e-6).all()
    assert torch.isclose(data.v_trainval.max(0).values, torch.ones(12), atol=1e-6).all()
    assert data.v_test_unseen.max() > 10  # not squeezed into [0, 1] by a scaler that saw them
    assert data.att.min() == 0 and data.att.max() == 1


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fmat, smat = raw_dataset()
    monkeypatch.setenv("IZF_DATA", str(write_raw(tmp_path, fmat, smat)))
    assert load_xlsa17("TINY").d_v == 12


def _expect(tmp_path: Path, fmat: dict | None, smat: dict | None, *fragments: str) -> None:
    with pytest.raises(DataError) as err:
        load_xlsa17("TINY", write_raw(tmp_path, fmat, smat))
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_no_data_dir_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IZF_DATA", raising=False)
    with pytest.raises(DataError, match="IZF_DATA"):
        load_xlsa17("AWA1")


def test_missing_dataset_directory_says_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"AWA1 does not exist.*xlsa17\.zip"):
        load_xlsa17("AWA1", tmp_path)


def test_missing_features_file(tmp_path: Path) -> None:
    _, smat = raw_dataset()
    _expect(tmp_path, None, smat, "Missing file", "res101.mat", "xlsa17.zip")


def test_corrupt_mat_file(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    write_raw(tmp_path, fmat, smat)
    (tmp_path / "TINY" / "res101.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="could not be read as a MATLAB"):
        load_xlsa17("TINY", tmp_path)


def test_missing_key(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    del smat["test_unseen_loc"]
    _expect(tmp_path, fmat, smat, "att_splits.mat", "missing key 'test_unseen_loc'", "keys found")


def test_transposed_features(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    fmat["features"] = fmat["features"].T.copy()
    _expect(tmp_path, fmat, smat, "res101.mat", "'features'", "transposed", "(36, 12)")


def test_features_not_2d(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    fmat["features"] = fmat["features"].reshape(12, 6, 6)
    _expect(tmp_path, fmat, smat, "'features' must be 2-D", "(12, 6, 6)")


def test_label_count_mismatch(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    fmat["labels"] = fmat["labels"][:-2]
    _expect(tmp_path, fmat, smat, "'features' has 36 columns", "'labels' has 34")


def test_label_out_of_range(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    fmat["labels"][0] = 7
    _expect(tmp_path, fmat, smat, "'labels'", "[1, 6]", "found values in [1.0, 7.0]")


def test_index_out_of_range(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["test_seen_loc"][0] = 37
    _expect(tmp_path, fmat, smat, "'test_seen_loc'", "[1, 36]")


def test_zero_index_is_out_of_range(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["trainval_loc"][0] = 0  # a 0-based file given where 1-based is expected
    _expect(tmp_path, fmat, smat, "'trainval_loc'", "1-based indices must lie in [1, 36]")


def test_overlapping_splits(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["test_seen_loc"][0] = smat["trainval_loc"][0]
    _expect(tmp_path, fmat, smat, "'trainval_loc' and 'test_seen_loc' share 1 image indices", "disjoint")


def test_unseen_class_with_training_images(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["trainval_loc"] = np.vstack([smat["trainval_loc"], smat["test_unseen_loc"][:1]])
    smat["test_unseen_loc"] = smat["test_unseen_loc"][1:]
    _expect(tmp_path, fmat, smat, "class4", "'test_unseen_loc' but also have images in 'trainval_loc'")


def test_nan_in_features(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    fmat["features"][3, 5] = np.nan
    _expect(tmp_path, fmat, smat, "'features' has 1 NaN or inf values", "[3, 5]")


def test_inf_in_attributes(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["att"][0, 0] = np.inf
    _expect(tmp_path, fmat, smat, "att_splits.mat", "'att' has 1 NaN or inf")


def test_d_a_not_below_d_v(tmp_path: Path) -> None:
    fmat, smat = raw_dataset(d_v=3, d_a=3)
    _expect(tmp_path, fmat, smat, "d_a = 3", "d_v = 3", "z_f")


def test_class_names_count_mismatch(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["allclasses_names"] = smat["allclasses_names"][:5]
    _expect(tmp_path, fmat, smat, "'allclasses_names' has 5 names", "6 class columns")


def test_duplicate_index_within_a_split(tmp_path: Path) -> None:
    fmat, smat = raw_dataset()
    smat["trainval_loc"][1] = smat["trainval_loc"][0]
    _expect(tmp_path, fmat, smat, "'trainval_loc' lists 1 image indices twice")


def test_digit_attribute_table_matches_reference_csvs() -> None:
    ref_dir = DIGITS_DESCRIPTORS
    seg = np.loadtxt(ref_dir / "seven_segment.csv", delimiter=",", skiprows=1)
    topo = np.loadtxt(ref_dir / "extra_topology.csv", delimiter=",", skiprows=1)
    att, names = digit_attributes(topology=True)
    np.testing.assert_array_equal(att, np.hstack([seg[:, 1:], topo[:, 1:]]))
    header = (ref_dir / "seven_segment.csv").read_text().splitlines()[0].split(",")[1:]
    header += (ref_dir / "extra_topology.csv").read_text().splitlines()[0].split(",")[1:]
    assert names == header


def test_prepared_digits_load_with_the_stated_split(tmp_path: Path) -> None:
    prepare_digits(tmp_path, unseen=(3, 6, 9), seed=0)
    data = load_xlsa17("DIGITS", tmp_path)
    assert data.d_v == 64 and data.d_a == 10
    assert data.unseen.tolist() == [3, 6, 9]
    assert sorted(data.seen.tolist()) == [0, 1, 2, 4, 5, 7, 8]
    n_seen = len(data.y_trainval) + len(data.y_test_seen)
    assert abs(len(data.y_trainval) / n_seen - 0.8) < 0.01
    for k in data.seen.tolist():  # stratified: every seen digit is in both parts at ~80/20
        a, b = int((data.y_trainval == k).sum()), int((data.y_test_seen == k).sum())
        assert abs(a / (a + b) - 0.8) < 0.02
    assert len(data.folds) == 3


def test_synthetic_surrogate_keeps_the_real_shapes(tmp_path: Path) -> None:
    from izf_lib.prepare import prepare_synthetic

    prepare_synthetic(tmp_path, like="AWA1", scale=0.05, d_v=96, name="S")  # the bundled AWA1 file by default
    data = load_xlsa17("S", tmp_path)
    d_a, n_classes, n_unseen, n_tv, n_ts, n_tu = BENCHMARK_SHAPES["AWA1"]
    assert data.d_a == d_a and data.att.shape[0] == n_classes
    assert len(data.unseen) == n_unseen and len(data.seen) == n_classes - n_unseen
    assert len(data.y_trainval) == round(0.05 * n_tv) and len(data.y_test_unseen) == round(0.05 * n_tu)
    testclasses = (AWA1_ATT.parent / "testclasses.txt").read_text().split()
    assert sorted(data.class_names[k] for k in data.unseen.tolist()) == sorted(testclasses)


def test_synthetic_surrogate_with_random_attributes_keeps_the_shapes(tmp_path: Path) -> None:
    from izf_lib.prepare import prepare_synthetic

    prepare_synthetic(tmp_path, like="APY", scale=0.02, d_v=96, name="R", random_attributes=True)
    data = load_xlsa17("R", tmp_path)
    d_a, n_classes, n_unseen, *_ = BENCHMARK_SHAPES["APY"]
    assert (data.d_a, data.att.shape[0], len(data.unseen)) == (d_a, n_classes, n_unseen)
    assert data.class_names[0] == "class_000"  # not the real APY class names


def test_unknown_benchmark_without_attributes_is_refused(tmp_path: Path) -> None:
    from izf_lib.prepare import prepare_synthetic

    with pytest.raises(DataError, match="no bundled attributes for 'IMAGENET'"):
        prepare_synthetic(tmp_path, like="IMAGENET")


def test_release_without_class_names_loads_with_numbered_names(tmp_path: Path) -> None:
    """xlsa17's FLO att_splits.mat has no 'allclasses_names'; the loader numbers the classes."""
    fmat, smat = raw_dataset()
    del smat["allclasses_names"]
    data = load_xlsa17("TINY", write_raw(tmp_path, fmat, smat))
    assert data.class_names == [f"class_{k:03d}" for k in range(1, 7)]
