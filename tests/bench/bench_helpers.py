"""Readers for a benchmark run's outputs, shared by the benchmark tests."""

import csv
import json

from PIL import Image


def read_outputs(out, name):
    """(csv rows as dicts of str, parsed json) of ``<out>/<name>.*``; checks the PNG decodes."""
    with (out / f"{name}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    data = json.loads((out / f"{name}.json").read_text())
    with Image.open(out / f"{name}.png") as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
    assert list(rows[0]) == data["columns"]
    assert data["columns"][:9] == ["method", "C", "d", "k", "batch", "crop", "device", "seconds", "peak_bytes"]
    assert len(data["rows"]) == len(rows)
    return rows, data


def csv_row(rows, selector):
    """The one ok CSV row whose fields equal ``selector`` (compared as text)."""
    found = [r for r in rows if r["status"] == "ok" and all(r[k] == str(v) for k, v in selector.items())]
    assert len(found) == 1, (selector, found)
    return found[0]


def recompute(rows, ratio):
    """A JSON ratio recomputed from the CSV rows."""
    num = float(csv_row(rows, ratio["numerator"])[ratio["column"]])
    den = float(csv_row(rows, ratio["denominator"])[ratio["column"]])
    return num / den


def ratio(data, name):
    """The ratio called ``name`` in a run's JSON."""
    (found,) = [r for r in data["ratios"] if r["name"] == name]
    return found
