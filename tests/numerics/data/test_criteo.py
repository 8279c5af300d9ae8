"""Criteo TSV / CSV loaders against hand-computed values and the csv module."""

import csv
import math
import re
from pathlib import Path

import pytest
import torch

from numerics.data.base import DATASETS, Sampling
from numerics.data.criteo import COLUMNS, criteo_csv, criteo_tsv


def _tsv_line(label: str, dense: list[str], sparse: list[str]) -> str:
    assert len(dense) == 13 and len(sparse) == 26
    return "\t".join([label, *dense, *sparse]) + "\n"


D0 = ["1", "", "-3", "0", "7", "", "", "", "", "", "", "", "12"]
S0 = ["ff", ""] + ["1"] * 24
D1 = ["", "2", "", "", "", "", "", "", "", "", "", "", "100"]
S1 = ["0A", "a"] + [""] * 24


def _write_tsv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "train.txt"
    path.write_text("".join(lines))
    return path


def test_tsv_by_hand(tmp_path: Path) -> None:
    lines = [_tsv_line("0", D0, S0), _tsv_line("1", D1, S1)] * 2  # rows 0..3
    data = criteo_tsv(seed=0, path=str(_write_tsv(tmp_path, lines)), hash_size=10,
                      test_fraction=0.25)  # fmt: skip
    assert DATASETS.get("criteo_tsv") is criteo_tsv
    assert DATASETS.meta("criteo_tsv")["task"] == "recsys"
    assert data.sampling is Sampling.SHUFFLE
    assert (len(data.train), len(data.test)) == (3, 1)  # the last quarter is the test split
    tr, te = data.train.tensors, data.test.tensors
    assert tr["dense"].dtype == torch.float32 and tr["sparse"].dtype == torch.int64
    assert tr["label"].tolist() == [0.0, 1.0, 0.0] and te["label"].tolist() == [1.0]
    # dense: missing -> 0, negative -> 0, then log(1 + x)
    row0 = [math.log1p(v) for v in [1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 12]]
    row1 = [math.log1p(v) for v in [0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100]]
    assert torch.allclose(tr["dense"][0], torch.tensor(row0), rtol=1e-6)
    assert torch.allclose(te["dense"][0], torch.tensor(row1), rtol=1e-6)
    # ids: int(hex, 16) % 9 + 1; 0xff = 255 = 28 * 9 + 3 -> 4; 0x1 -> 2; 0x0A = 10 -> 2;
    # 0xa -> 2; missing -> 0
    assert tr["sparse"][0].tolist() == [4, 0] + [2] * 24
    assert te["sparse"][0].tolist() == [2, 2] + [0] * 24
    assert data.info == {
        "num_dense": 13,
        "cardinalities": [10] * 26,
        "positive_rate": pytest.approx(1 / 3),
        "train_size": 3,
        "test_size": 1,
        "path": str(tmp_path / "train.txt"),
    }


def test_tsv_limit_and_real_hash_size(tmp_path: Path) -> None:
    lines = [_tsv_line(str(k % 2), D0, S0) for k in range(10)]
    data = criteo_tsv(seed=0, path=str(_write_tsv(tmp_path, lines)), limit=5, test_fraction=0.2)
    assert (len(data.train), len(data.test)) == (4, 1)
    assert data.test.tensors["label"].tolist() == [0.0]  # row 4 of 0..9
    assert data.train.tensors["sparse"][0, 0].item() == 255 % 99_999 + 1
    assert data.info["cardinalities"] == [100_000] * 26


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("0\t1\t2\n", "3 fields; expected 40"),
        (_tsv_line("0", ["x", *D0[1:]], S0), "I1 = 'x' is not an integer"),
        (_tsv_line("0", [*D0[:4], "1.5", *D0[5:]], S0), "I5 = '1.5' is not an integer"),
        (_tsv_line("0", D0, [*S0[:3], "xyz", *S0[4:]]), "C4 = 'xyz' is not a hex id"),
        (_tsv_line("0", D0, [*S0[:3], "0x1f", *S0[4:]]), "C4 = '0x1f' is not a hex id"),
        (_tsv_line("2", D0, S0), "label '2'; expected 0 or 1"),
    ],
)
def test_tsv_malformed_line_names_file_and_line(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    path = _write_tsv(tmp_path, [_tsv_line("0", D0, S0), _tsv_line("1", D1, S1), bad_line])
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}, line 3: {message}"):
        criteo_tsv(seed=0, path=str(path))


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.path: required"):
        criteo_tsv(seed=0)
    with pytest.raises(ValueError, match=r"data\.path: required"):
        criteo_csv(seed=0)
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        criteo_tsv(seed=0, path=str(missing))
    path = _write_tsv(tmp_path, [_tsv_line("0", D0, S0)] * 3)
    with pytest.raises(ValueError, match=r"data\.test_fraction: 1\.5"):
        criteo_tsv(seed=0, path=str(path), test_fraction=1.5)
    with pytest.raises(ValueError, match=r"data\.test_fraction: 0\.1 of 3 rows leaves an empty"):
        criteo_tsv(seed=0, path=str(path))


def test_csv_sample_parses(shared_data: Path) -> None:
    path = shared_data / "criteo_sample.csv"
    data = criteo_csv(seed=0, path=str(path), test_fraction=0.25)
    assert (len(data.train), len(data.test)) == (150, 50)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    labels = torch.cat([data.train.tensors["label"], data.test.tensors["label"]])
    assert labels.tolist() == [float(r["label"]) for r in rows]
    dense = torch.cat([data.train.tensors["dense"], data.test.tensors["dense"]])
    sparse = torch.cat([data.train.tensors["sparse"], data.test.tensors["sparse"]])
    # the first two data rows: I2=3, I3=260.0, I5=17668.0 / I2=-1 (-> 0), I4=35.0, I1 empty
    assert rows[0]["I2"] == "3" and rows[0]["I3"] == "260.0" and rows[1]["I2"] == "-1"
    assert dense[0, 1].item() == pytest.approx(math.log(4), rel=1e-6)
    assert dense[0, 2].item() == pytest.approx(math.log(261), rel=1e-6)
    assert dense[0, 4].item() == pytest.approx(math.log(17669), rel=1e-6)
    assert dense[1, 1].item() == 0.0 and dense[1, 0].item() == 0.0
    assert dense[1, 3].item() == pytest.approx(math.log(36), rel=1e-6)
    # C1 of row 0 is 05db9164; C19 is empty
    assert rows[0]["C1"] == "05db9164" and rows[0]["C19"] == ""
    assert sparse[0, 0].item() == 0x05DB9164 % 99_999 + 1
    assert sparse[0, 18].item() == 0
    assert data.info["positive_rate"] == pytest.approx(
        sum(float(r["label"]) for r in rows[:150]) / 150
    )


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_by_header_name_matches_tsv(tmp_path: Path) -> None:
    canon = [["0", *D0, *S0], ["1", *D1, *S1], ["1", *D0, *S1]]
    tsv = _write_tsv(tmp_path, ["\t".join(r) + "\n" for r in canon])
    order = list(reversed(range(40)))  # columns reversed, plus an extra column
    header = ["extra"] + [COLUMNS[k] for k in order]
    shuffled = [["?"] + [r[k] for k in order] for r in canon]
    csv_path = _write_csv(tmp_path / "x.csv", header, shuffled)
    a = criteo_tsv(seed=0, path=str(tsv), test_fraction=0.34, hash_size=50)
    b = criteo_csv(seed=1, path=str(csv_path), test_fraction=0.34, hash_size=50)
    for split in ("train", "test"):
        ta, tb = getattr(a, split).tensors, getattr(b, split).tensors
        assert all(torch.equal(ta[k], tb[k]) for k in ("dense", "sparse", "label"))


def test_csv_missing_column_and_malformed_row(tmp_path: Path) -> None:
    header = [c for c in COLUMNS if c != "I7"]
    path = _write_csv(tmp_path / "a.csv", header, [])
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: no column 'I7' in the header"):
        criteo_csv(seed=0, path=str(path))
    rows = [["0", *D0, *S0], ["1", *D1[:12], "abc", *S1]]
    path = _write_csv(tmp_path / "b.csv", COLUMNS, rows)
    with pytest.raises(
        ValueError, match=f"{re.escape(str(path))}, line 3: I13 = 'abc' is not an integer"
    ):
        criteo_csv(seed=0, path=str(path))
    path = _write_csv(tmp_path / "c.csv", COLUMNS, [["0", *D0, *S0], ["1", "2"]])
    with pytest.raises(
        ValueError, match=f"{re.escape(str(path))}, line 3: 2 fields; the header has 40"
    ):
        criteo_csv(seed=0, path=str(path))
