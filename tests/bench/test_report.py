"""Ratios, goals, sizes and writers of the benchmark reports."""

import json

import pytest

from esseg.bench.common import format_bytes, parse_bytes, parse_int_list
from esseg.bench.report import Ratio, compute_ratio, write_csv, write_json
from esseg.errors import EssegError

ROWS = [
    dict(method="baseline", C=19, status="ok", peak_bytes=100, max_batch=4),
    dict(method="ess", C=19, status="ok", peak_bytes=105, max_batch=16, capped=True),
    dict(method="baseline", C=1284, status="oom", note="out of memory"),
    dict(method="ess", C=1284, status="ok", peak_bytes=110),
]


def test_compute_ratio_value_verdict_and_missing():
    r = compute_ratio(ROWS, Ratio("a", "a", "peak_bytes", dict(method="ess", C=1284), dict(method="baseline", C=19), "<= 1.10"))
    assert r["value"] == pytest.approx(1.1) and r["verdict"] == "PASS"
    r = compute_ratio(ROWS, Ratio("b", "b", "peak_bytes", dict(method="ess", C=1284), dict(method="baseline", C=19), "<= 1.05"))
    assert r["verdict"] == "MISS"
    r = compute_ratio(ROWS, Ratio("c", "c", "peak_bytes", dict(method="ess", C=1284), dict(method="baseline", C=1284), "<= 0.2"))
    assert r["value"] is None and r["verdict"] == "n/a" and "out of memory" in r["note"]
    r = compute_ratio(ROWS, Ratio("d", "d", "peak_bytes", dict(method="ess", C=5000), dict(method="baseline", C=19)))
    assert r["value"] is None and r["verdict"] is None and "not in this run" in r["note"]


def test_capped_side_gives_a_bound():
    ess, base = dict(method="ess", C=19), dict(method="baseline", C=19)
    r = compute_ratio(ROWS, Ratio("e", "e", "max_batch", ess, base, ">= 6"))  # 16/4 = 4, but ESS was capped
    assert r["value"] == 4 and r["verdict"] == "n/a" and "lower bound" in r["note"]
    r = compute_ratio(ROWS, Ratio("f", "f", "max_batch", ess, base, ">= 3"))  # a lower bound above 3 decides
    assert r["verdict"] == "PASS"


def test_parse_sizes_and_lists():
    assert parse_bytes("4GiB") == 4 * 2**30 and parse_bytes("12GB") == 12 * 10**9 and parse_bytes("512 MiB") == 2**29
    assert parse_bytes("1e9") == 10**9
    for bad in ("", "GiB", "-1GiB", "4 parsecs", "nan"):
        with pytest.raises(EssegError):
            parse_bytes(bad)
    assert parse_int_list("19, 150,1284", "--classes") == [19, 150, 1284]
    with pytest.raises(EssegError, match="--classes"):
        parse_int_list(",", "--classes")
    assert format_bytes(3 * 2**30) == "3 GiB" and format_bytes(None) == "-" and format_bytes(512) == "512 B"


def test_writers_are_atomic_and_null_safe(tmp_path):
    write_csv(tmp_path / "a.csv", [dict(method="ess", C=19, x=None)], ["method", "C", "x"])
    assert (tmp_path / "a.csv").read_text().splitlines() == ["method,C,x", "ess,19,"]
    write_json(tmp_path / "a.json", dict(v=float("nan"), w=[1.5]))
    assert json.loads((tmp_path / "a.json").read_text()) == dict(v=None, w=[1.5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json"]
