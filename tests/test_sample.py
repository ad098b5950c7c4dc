"""srjax sample end to end: a time series with displacement, a run's encoder, the labels
template, and the batched phase correlation against skimage's."""

import json

import numpy as np
import pytest
from skimage.registration import phase_cross_correlation

from srjax import io
from srjax.analysis import tables
from srjax.analysis.tiles import phase_shift
from srjax.cli import main
from srjax.phantom4d import SeriesSpec, make_series
from srjax.sparse import UNLABELLED


def test_phase_shift_equals_skimage():
    rng = np.random.default_rng(0)
    base = rng.random((6, 32, 32))
    moved = np.stack([np.roll(b, (dy, dx), axis=(0, 1)) for b, (dy, dx) in
                      zip(base, [(0, 0), (1, 0), (0, -3), (2, 2), (-5, 4), (7, -1)])])
    expected = [np.hypot(*phase_cross_correlation(a, b)[0]) for a, b in zip(base, moved)]
    np.testing.assert_allclose(phase_shift(base, moved), expected)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    made = make_series(SeriesSpec(shape=(24, 96, 96), steps=3, seed=2, pores=3, inclusions=20))
    paths = []
    for t in range(3):
        paths.append(str(root / f"t{t}.ome.zarr"))
        io.write_volume(paths[-1], made.volumes[t])
    return root, paths


def test_sample_a_series_compares_every_method(series, capsys):
    root, paths = series
    out = root / "sample"
    assert main(["sample", *paths, "--budget", "8", "--tile", "32", "--out", str(out), "--compare",
                 "--alpha-sweep"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["signal"] == "displacement" and summary["tiles"] == 3 * 24 * 9
    assert set(summary["scores"]) == {"random", "typiclust", "probcover", "dids"}
    selection = tables.read(out / "selection.csv")
    for method in summary["scores"]:
        rows = selection["method"] == method
        assert rows.sum() == 8 and len({(t, z, y, x) for t, z, y, x in zip(
            *(selection[k][rows] for k in ("time", "z", "y", "x")))}) == 8
    assert [row["alpha"] for row in summary["alpha_sweep"]] == pytest.approx(np.linspace(0, 1, 11))
    tiles = tables.read(out / "tiles.parquet")
    assert len(tiles["pc1"]) == summary["tiles"] and tiles["signal"].max() > 0
    for name in ("contact_sheet.png", "scatter.png", "alpha.png", "compare.md"):
        assert (out / name).stat().st_size > 0
    again = root / "again"
    assert main(["sample", *paths, "--budget", "8", "--tile", "32", "--out", str(again), "--method", "dids"]) == 0
    mine = tables.read(again / "selection.csv")
    dids = selection["method"] == "dids"
    np.testing.assert_array_equal(mine["z"], selection["z"][dids])  # the same seed picks the same tiles


def test_sample_refuses_bad_requests(series, capsys):
    root, paths = series
    cases = [(["--budget", "100000"], "--budget"), (["--budget", "4", "--tile", "200"], "--tile"),
             (["--budget", "4", "--method", "best"], "--method"), (["--budget", "4", "--template"], "--run")]
    for extra, words in cases:
        assert main(["sample", paths[0], "--tile", "32", "--out", str(root / "bad"), *extra]) == 2
        assert words in capsys.readouterr().err
        assert not (root / "bad").exists()


def test_sample_with_a_runs_encoder_writes_a_template(tmp_path, tiny_run):
    run = tiny_run
    volume = run / "volume.ome.zarr"
    out = tmp_path / "sample"
    assert main(["sample", str(volume), "--run", str(run), "--budget", "3", "--tile", "16", "--out", str(out),
                 "--template"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["embedding"] == "encoder" and summary["signal"] == "class mix"
    template = io.open_volume(out / "labels_template.ome.zarr").read().result()
    labels = io.open_volume(run / "labels.ome.zarr").read().result()
    picked = template != UNLABELLED
    assert picked.sum() == 3 * 16 * 16
    np.testing.assert_array_equal(template[picked], labels[picked])
