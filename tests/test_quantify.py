"""srjax quantify and query: the feature table, the instance image, a time series' tracks
and events against the 4-D phantom's object model, scene graphs, and bad input."""

import json

import networkx as nx
import numpy as np
import pytest
from scipy import ndimage

from conftest import scipy_label_of
from srjax import io
from srjax.analysis import graphs, tables
from srjax.analysis.components import structure
from srjax.analysis.query import query, select
from srjax.analysis.quantify import follow, open_labels, quantify
from srjax.cli import main
from srjax.errors import SrjaxError
from srjax.phantom4d import CLASS_NAMES, INCLUSION, PORE, CRACK, SeriesSpec, make_series, truth_events


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    made = make_series(SeriesSpec(seed=1))
    paths = []
    for t in range(made.spec.steps):
        paths.append(root / f"t{t}.ome.zarr")
        io.write_volume(paths[-1], made.labels[t], labels=list(CLASS_NAMES))
    out = root / "q"
    record = quantify(paths, [INCLUSION, PORE, CRACK], out, progress=False, near=2.0)
    return made, out, record


def test_displacements_are_the_phantoms(series):
    made, _, record = series
    np.testing.assert_array_equal(record["displacements"], np.diff(made.shifts, axis=0))


def objects_of(made, out, cls, time, feature):
    instances = np.asarray(io.open_volume(out / "instances" / f"class{cls}" / f"t{time:04d}.ome.zarr").read().result())
    return tuple(sorted(set(np.unique(made.objects[time][instances == feature]).tolist())))


def test_events_are_the_object_models(series):
    made, out, _ = series
    events = tables.read(out / "events.csv")
    for cls in (INCLUSION, PORE, CRACK):
        truth = truth_events(made, cls)
        mine = {kind: [] for kind in truth}
        for time, c, kind, before, after in zip(events["time"], events["class_id"], events["event"],
                                                events["before"], events["after"]):
            if c != cls:
                continue
            ids = [int(v) for v in str(after if kind in ("birth", "merge") else before).split()]
            when = time if kind in ("birth", "merge") else time - 1
            mine[kind].append((int(time), tuple(sorted(set().union(*(objects_of(made, out, cls, when, i)
                                                                     for i in ids))))))
        for kind in truth:
            assert sorted(mine[kind]) == sorted(truth[kind]), (cls, kind)
    assert truth_events(made, PORE)["merge"] and truth_events(made, PORE)["birth"]


def test_tracks_grow_as_the_phantom_does(series):
    made, out, _ = series
    features = tables.read(out / "features.parquet")
    for cls, check in ((INCLUSION, "constant"), (PORE, "growing"), (CRACK, "growing")):
        rows = features["class_id"] == cls
        for track in set(features["track"][rows].tolist()):
            volumes = features["volume"][rows][features["track"][rows] == track]
            steps = np.diff(volumes)
            assert (steps == 0).all() if check == "constant" else (steps > 0).all()
    crack = features["class_id"] == CRACK
    assert len(set(features["track"][crack].tolist())) == 1
    np.testing.assert_array_equal(features["voxels"][crack], [(made.labels[t] == CRACK).sum() for t in range(6)])


def test_instances_and_table_agree_with_scipy(series):
    made, out, _ = series
    features = tables.read(out / "features.csv")
    parquet = tables.read(out / "features.parquet")
    for name in features:
        np.testing.assert_allclose(features[name].astype(float), parquet[name].astype(float))
    for t in (0, 5):
        expected, count = ndimage.label(made.labels[t] == PORE, structure(6))
        instances = io.open_volume(out / "instances" / f"class{PORE}" / f"t{t:04d}.ome.zarr").read().result()
        theirs = scipy_label_of(instances, expected)
        rows = (features["time"] == t) & (features["class_id"] == PORE)
        assert rows.sum() == count
        np.testing.assert_array_equal(features["voxels"][rows], np.bincount(expected.ravel())[theirs[features["id"][rows]]])


def test_summary_counts_and_fractions(series):
    made, out, record = series
    summary = json.loads((out / "summary.json").read_text())
    step = next(s for s in summary["steps"] if s["class"] == INCLUSION and s["time"] == 2)
    assert step["count"] == sum(b.cls == INCLUSION for b in made.balls)
    assert step["volume_fraction"] == pytest.approx((made.labels[2] == INCLUSION).mean())
    assert f"| {INCLUSION} | 2 | {step['count']} |" in (out / "summary.md").read_text()


def test_spatiotemporal_graph_holds_every_feature_and_link(series):
    _, out, _ = series
    graph = nx.read_graphml(out / "graphs" / "spatiotemporal.graphml")
    features, links = tables.read(out / "features.csv"), tables.read(out / "links.csv")
    assert graph.number_of_nodes() == len(features["id"])
    kinds = [d["kind"] for _, _, d in graph.edges(data=True)]
    assert kinds.count("next") == len(links["id"])
    step = json.loads((out / "graphs" / "t0003.json").read_text())
    assert len(step["nodes"]) == (features["time"] == 3).sum()


def test_near_pairs_equal_brute_force():
    rng = np.random.default_rng(0)
    n = 300
    low = rng.integers(0, 60, size=(n, 3))
    size = rng.integers(1, 4, size=(n, 3))
    size[:5] = rng.integers(20, 40, size=(5, 3))  # a few large features, like a crack
    features = {"z0": low[:, 0], "y0": low[:, 1], "x0": low[:, 2],
                "z1": low[:, 0] + size[:, 0], "y1": low[:, 1] + size[:, 1], "x1": low[:, 2] + size[:, 2]}
    spacing = (2.0, 1.0, 0.5)
    pairs, gap = graphs.near_pairs(features, 3.0, spacing)
    lo = np.stack([features[k] for k in ("z0", "y0", "x0")], 1) * spacing
    hi = np.stack([features[k] for k in ("z1", "y1", "x1")], 1) * spacing
    a, b = np.triu_indices(n, 1)
    every = graphs.gaps(lo, hi, a, b)
    expected = np.stack([a, b], 1)[every <= 3.0]
    np.testing.assert_array_equal(pairs, expected)
    np.testing.assert_allclose(gap, every[every <= 3.0])


def test_query_selects_orders_and_refuses():
    table = {"id": np.arange(1, 6), "volume": np.array([5.0, 50, 20, 500, 1]), "time": np.array([0, 1, 1, 1, 2])}
    np.testing.assert_array_equal(select(table, "volume > 10 and time == 1"), [False, True, True, True, False])
    np.testing.assert_array_equal(select(table, "not (volume > 10) or 2 * time >= 4"), [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(select(table, "1 < time <= 1"), [0, 0, 0, 0, 0])
    assert query(table, "time == 1", top=2, by="volume").tolist() == [3, 1]
    assert query(table, None, top=2, by="volume", ascending=True).tolist() == [4, 0]
    for bad, words in (("__import__('os')", "not allowed"), ("volume.real > 1", "not allowed"),
                       ("size > 3", "no column 'size'"), ("volume >", "not an expression"),
                       ("time in (1, 2)", "not allowed")):
        with pytest.raises(SrjaxError, match=words):
            select(table, bad)


def test_cli_quantify_and_query(tmp_path, capsys):
    labels = np.zeros((6, 20, 20), np.uint8)
    labels[1:3, 2:5, 2:5] = 2
    labels[4, 10:18, 10:12] = 2
    labels[0, 0, 0] = 2
    io.write_volume(tmp_path / "labels.ome.zarr", labels, voxel_size=(2.0, 1.0, 1.0), unit="micrometer")
    out = tmp_path / "q"
    assert main(["quantify", str(tmp_path / "labels.ome.zarr"), "--class", "2", "--out", str(out),
                 "--min-voxels", "2"]) == 0
    features = tables.read(out)
    assert "| Count | 2 | 2 |" in (out / "summary.md").read_text()
    assert features["voxels"].tolist() == [18, 16]
    assert features["volume"].tolist() == [36.0, 32.0]  # the volume's own voxel size
    instances = io.open_volume(out / "instances" / "class2" / "t0000.ome.zarr").read().result()
    assert instances[0, 0, 0] == 0 and instances[1, 2, 2] == 2 and instances[4, 10, 10] == 3
    capsys.readouterr()
    assert main(["query", str(out), "voxels > 16", "--columns", "id,voxels"]) == 0
    assert capsys.readouterr().out.splitlines() == ["id\tvoxels", "2\t18"]
    assert main(["quantify", str(tmp_path / "labels.ome.zarr"), "--class", "2", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_quantify_refuses_bad_input(tmp_path, capsys):
    io.write_volume(tmp_path / "float.ome.zarr", np.zeros((2, 4, 4), np.float32))
    io.write_volume(tmp_path / "labels.ome.zarr", np.ones((2, 4, 4), np.uint8))
    io.write_volume(tmp_path / "other.ome.zarr", np.ones((3, 4, 4), np.uint8))
    cases = [
        (["quantify", str(tmp_path / "float.ome.zarr"), "--class", "1"], "needs integer labels"),
        (["quantify", str(tmp_path / "labels.ome.zarr"), "--class", "3"], "has no voxel of class 3"),
        (["quantify", str(tmp_path / "labels.ome.zarr"), "--class", "300"], "cannot occur"),
        (["quantify", str(tmp_path / "missing.ome.zarr"), "--class", "1"], "does not exist"),
        (["quantify", str(tmp_path / "labels.ome.zarr"), str(tmp_path / "other.ome.zarr"), "--class", "1"],
         "different shapes"),
    ]
    for args, words in cases:
        out = tmp_path / "q"
        assert main([*args, "--out", str(out)]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("srjax: error")]
        assert len(errors) == 1 and words in errors[0]
        assert not out.exists()


def test_cli_writes_the_corrosion_series_with_its_answers(tmp_path, capsys):
    out = tmp_path / "corrosion"
    assert main(["phantom", str(out), "--family", "corrosion", "--shape", "32,96,96", "--steps", "4",
                 "--seed", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    made = make_series(SeriesSpec(shape=(32, 96, 96), steps=4, seed=1))
    assert summary["shifts"] == made.shifts.tolist()
    assert summary["events"]["pore"]["birth"] == [[t, list(o)] for t, o in truth_events(made, PORE)["birth"]]
    for t in range(4):
        np.testing.assert_array_equal(io.open_volume(out / f"truth_t{t:04d}.ome.zarr").read().result(), made.labels[t])
    assert main(["phantom", str(tmp_path / "other"), "--steps", "3"]) == 2
    assert "--steps is for the 4-D family corrosion" in capsys.readouterr().err


def test_a_class_absent_from_early_steps_is_born_later(tmp_path):
    steps = [np.zeros((4, 16, 16), np.uint8) for _ in range(3)]
    steps[1][1:3, 4:8, 4:8] = 1
    steps[2][1:3, 4:9, 4:9] = 1
    paths = []
    for t, labels in enumerate(steps):
        paths.append(tmp_path / f"t{t}.ome.zarr")
        io.write_volume(paths[-1], labels)
    quantify(paths, [1], tmp_path / "q", progress=False, workers=1)
    events = tables.read(tmp_path / "q" / "events.csv")
    assert events["event"].tolist() == ["birth"] and events["time"].tolist() == [1]
    features = tables.read(tmp_path / "q" / "features.csv")
    assert features["voxels"].tolist() == [32, 50] and len(set(features["track"].tolist())) == 1


def test_a_merge_of_many_features_lists_every_one(tmp_path):
    """280 specks merge into a sheet while 280 others are born: the merge names all 280
    ids, and the events' text columns are not padded to that longest row in memory."""
    steps = [np.zeros((5, 40, 40), np.uint8) for _ in range(2)]
    for labels in steps:
        labels[:2, 30:, :25] = 2  # a block that stays put, for the registration to hold on to
    steps[0][1, :28:2, ::2] = 1
    steps[1][1, :28] = 1
    steps[1][3, :28:2, ::2] = 1
    paths = []
    for t, labels in enumerate(steps):
        paths.append(tmp_path / f"t{t}.ome.zarr")
        io.write_volume(paths[-1], labels)
    out = tmp_path / "q"
    quantify(paths, [1], out, progress=False, workers=1)
    events = tables.read(out / "events.csv")
    merge = events["event"] == "merge"
    assert merge.sum() == 1 and (events["event"] == "birth").sum() == 280
    assert sorted(map(int, str(events["before"][merge][0]).split())) == list(range(1, 281))
    _, _, held = follow([open_labels(p) for p in paths], [1], tables.read(out / "features.parquet"), out, 1)
    assert held["before"].nbytes + held["after"].nbytes < 100_000


def _growth_graph(targets_at):
    graph = nx.Graph()
    node = {"class_id": 3, "centroid_z": 10.0, "centroid_y": 10.0}
    graph.add_node("g0", time=0, centroid_x=10.0, **node)
    graph.add_node("g1", time=1, centroid_x=14.0, **node)
    graph.add_edge("g0", "g1", kind="next")
    for i, x in enumerate(targets_at):
        graph.add_node(f"t{i}", time=0, class_id=1, centroid_z=10.0, centroid_y=10.0 + i % 3, centroid_x=x)
    return graph


def test_growth_toward_counts_targets_ahead_against_the_room_there():
    ahead_only = graphs.growth_toward(_growth_graph([15, 16, 17, 18]), 3, 1, 8, (21, 21, 40), [[0, 0, 0]])
    assert ahead_only["ahead"] == 4 and ahead_only["behind"] == 0
    even = graphs.growth_toward(_growth_graph([4, 6, 14, 16]), 3, 1, 8, (21, 21, 40), [[0, 0, 0]])
    assert even["ahead"] == even["behind"] == 2 and even["density_ratio"] == pytest.approx(1.0, abs=0.05)
    at_surface = graphs.growth_toward(_growth_graph([4, 6, 14, 16]), 3, 1, 8, (21, 21, 14), [[0, 0, 0]])
    assert at_surface["expected_ahead"] < 2  # the sample ends 3 voxels ahead: less room there
    moved = graphs.growth_toward(_growth_graph([15, 16]), 3, 1, 8, (21, 21, 40), [[0, 0, 4]])
    assert moved["ahead"] == 0  # the grower's shift was the sample's: it did not grow


def test_table_written_in_batches_equals_the_whole(tmp_path):
    rng = np.random.default_rng(0)
    whole = {"id": np.arange(1, 1001), "volume": rng.random(1000), "touches_surface": rng.random(1000) > 0.5}
    with tables.Writer(tmp_path / "batches", rows=300) as writer:
        for start in range(0, 1000, 70):
            writer.write({name: column[start : start + 70] for name, column in whole.items()})
    for suffix in (".csv", ".parquet"):
        back = tables.read(tmp_path / f"batches{suffix}")
        for name, column in whole.items():
            np.testing.assert_array_equal(back[name], column)
    with pytest.raises(RuntimeError), tables.Writer(tmp_path / "broken") as writer:
        writer.write(whole)
        raise RuntimeError("interrupted")
    assert not list(tmp_path.glob("broken*"))


def test_quantify_one_volume_streams_the_same_table_as_a_series_holds(tmp_path):
    made = make_series(SeriesSpec(shape=(24, 64, 64), steps=1, seed=2))
    io.write_volume(tmp_path / "t0.ome.zarr", made.labels[0])
    streamed = quantify([tmp_path / "t0.ome.zarr"], [INCLUSION, PORE], tmp_path / "streamed", progress=False)
    held = quantify([tmp_path / "t0.ome.zarr"], [INCLUSION, PORE], tmp_path / "held", progress=False, near=5.0)
    assert streamed["steps"] == held["steps"]
    a, b = tables.read(tmp_path / "streamed"), tables.read(tmp_path / "held")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
