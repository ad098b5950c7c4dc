"""Sweeps: members are ordinary run directories, stage 1 and stage 2 are shared where they
would be computed the same, a killed sweep finishes only what is missing, and the
results table is rebuilt from the run directories alone."""

import concurrent.futures
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import read_all, subprocess_env
from srjax import results, sweep, train
from srjax.cli import main
from srjax.config import apply_overrides
from srjax.errors import SrjaxError
from srjax.pipeline import run_pipeline

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

SWEEP_FILE = """
from srjax.phantom import PhantomSpec
from srjax.sweep import Sweep, grid, sized


def sweep(size):
    base, _ = sized(size)
    volumes = {{"phantom": PhantomSpec(shape=(8, 40, 40), seed=5)}}
    return Sweep("test", base, volumes, grid(volumes, {axes}, {seeds}))
"""


def _write_sweep(path: Path, axes: dict, seeds=(0,)) -> Path:
    path.write_text(SWEEP_FILE.format(axes=repr(axes), seeds=repr(tuple(seeds))))
    return path


def _study_command(file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "srjax.cli", "sweep", str(file), "--size", "tiny", "--out", str(out)]


def _timings(out: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/timings.json")}


def test_a_killed_sweep_finishes_only_what_is_missing(tmp_path):
    """Killed once both members have trained stage 2, the rerun trains no stage 2 again."""
    file = _write_sweep(tmp_path / "two_seeds.py", {}, seeds=(0, 1))
    out = tmp_path / "sweep"
    proc = subprocess.Popen(_study_command(file, out), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while "stage2" not in _timings(out).get("seed=1", {}) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = _timings(out)
    assert "stage2" in before["seed=1"] and not (out / "runs" / "seed=1" / "metrics.json").exists()

    assert main(["sweep", "--status", str(out)]) == 0
    assert main(["sweep", str(file), "--size", "tiny", "--out", str(out)]) == 0
    after = _timings(out)
    for member, steps in before.items():  # what was done was not done again
        assert {step: after[member][step] for step in steps} == steps
    second = out / "runs" / "seed=1"
    assert (second / "pseudo_labels.ome.zarr").is_symlink()  # stage 1 was shared, not recomputed
    assert np.array_equal(read_all(second / "pseudo_labels.ome.zarr"),
                          read_all(out / "runs" / "seed=0" / "pseudo_labels.ome.zarr"))
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["seed"] for row in rows] == [0, 1]
    assert "| all | 2 |" in (out / "results.md").read_text()

    # A rerun of a finished sweep trains nothing; the table comes back from the run directories alone.
    timings = {p: p.read_text() for p in out.glob("runs/*/timings.json")}
    for name in ("results.json", "results.csv", "results.md"):
        (out / name).unlink()
    assert main(["sweep", str(file), "--size", "tiny", "--out", str(out)]) == 0
    assert {p: p.read_text() for p in out.glob("runs/*/timings.json")} == timings
    assert json.loads((out / "results.json").read_text())["rows"] == rows


def test_a_study_run_in_shares_gathers_into_one_table(tmp_path):
    """Seed 0 in one directory, seed 1 in another that carries seed 0's row: one table, as
    if one sweep had run both; a prior whose member had other settings is refused."""
    file = _write_sweep(tmp_path / "two_seeds.py", {}, seeds=(0, 1))
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["sweep", str(file), "--size", "tiny", "--out", str(first), "--members", "*seed=0"]) == 0
    assert [p.name for p in (first / "runs").iterdir()] == ["seed=0"]
    assert main(["sweep", str(file), "--size", "tiny", "--out", str(second), "--prior", str(first)]) == 0
    assert [p.name for p in (second / "runs").iterdir()] == ["seed=1"]  # seed 0 was not rerun
    rows = json.loads((second / "results.json").read_text())["rows"]
    assert [row["member"] for row in rows] == ["seed=0", "seed=1"]
    assert rows[0] == json.loads((first / "results.json").read_text())["rows"][0]
    assert "| all | 2 |" in (second / "results.md").read_text()

    with pytest.raises(SrjaxError, match="matches no member"):
        sweep.run_sweep(sweep.load(file, "tiny"), tmp_path / "none", "tiny", members=("seed=7",), progress=False)
    study = sweep.load(file, "tiny")
    changed = dataclasses.replace(study, base=apply_overrides(study.base, ["stage3.confidence=0.7"]))
    with pytest.raises(SrjaxError, match=r"another config .*stage3.confidence: 0.5 -> 0.7"):
        sweep.run_sweep(changed, tmp_path / "third", "tiny", prior=(first,), progress=False)
    assert not (tmp_path / "third").exists()
    results = json.loads((first / "results.json").read_text())
    del results["sweep"]["base"]["stage3.ema_warmup"]  # as if written before the key existed
    (first / "results.json").write_text(json.dumps(results))
    assert list(sweep.prior_rows(study, "tiny", (first,))) == ["seed=0"]


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_a_shorter_stage_taken_from_a_longer_one_is_the_run_alone(tmp_path, stage):
    """Table V's sharing, and its stage-3 twin: the stage trained once for 4 steps, kept at
    step 2; the 2-step member ends exactly where it ends on its own."""
    file = _write_sweep(tmp_path / "durations.py", {f"{stage}.steps": [2, 4]})
    out = tmp_path / "sweep"
    study = sweep.load(file, "tiny")
    sweep.run_sweep(study, out, "tiny", progress=False)
    short = out / "runs" / f"{stage}.steps=2,seed=0"
    taken = [f for f in (short / "checkpoints" / stage / "2").rglob("*") if f.is_file()]
    assert taken and all(f.stat().st_nlink == 2 for f in taken)  # hard links to the 4-step member's checkpoint
    assert train.latest_step(out / "runs" / f"{stage}.steps=4,seed=0" / "checkpoints" / stage) == 4

    member = next(m for m in study.members if m.name == f"{stage}.steps=2,seed=0")
    volumes = out / "volumes" / "phantom"
    alone = tmp_path / "alone"
    run_pipeline(volumes / "volume.ome.zarr", alone, study.config(member), volumes / "truth.ome.zarr",
                 progress=False)
    for trained in ("stage2", "stage3"):
        shared = train.latest_params(short / "checkpoints" / trained)
        single = train.latest_params(alone / "checkpoints" / trained)
        for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(single), strict=True):
            np.testing.assert_array_equal(a, b)
    assert np.array_equal(read_all(short / "labels.ome.zarr"), read_all(alone / "labels.ome.zarr"))


def test_plan_shares_stage1_by_pseudo_config_and_stage2_by_everything_before_it(tmp_path):
    file = _write_sweep(tmp_path / "plan.py", {"pseudo.method": ["kmeans", "otsu"], "stage3.confidence": [0.5, 0.7]},
                        seeds=(0, 1))
    study = sweep.load(file, "tiny")
    planned = sweep.plan(study, tmp_path, {"phantom": 8})
    computes_stage1 = [p for p in planned if p.stage1_from is None]
    computes_stage2 = [p for p in planned if p.stage2_from is None]
    assert len(planned) == 8
    assert len(computes_stage1) == 2  # one per pseudo method; the seed does not change k-means or Otsu
    assert len(computes_stage2) == 4  # one per (method, seed); the stage-3 confidence comes after it
    assert all(p.stage3_from is None for p in planned)  # every member's stage 3 differs
    by_run = {p.run: p for p in planned}
    for p in planned:  # whoever a member takes work from does that work itself
        for stage, source in (("stage1", p.stage1_from), ("stage2", p.stage2_from), ("stage3", p.stage3_from)):
            assert source is None or getattr(by_run[source], f"{stage}_from") is None
    assert all(p.stage1_from is None and p.stage2_from is None
               for p in sweep.plan(study, tmp_path, {"phantom": 8}, share=False))


def test_members_that_differ_only_after_stage3_share_it(tmp_path):
    """Two ways of labelling the volume after one stage 3: it is trained once, and the
    other member's stage-3 checkpoint is a hard link to it."""
    file = _write_sweep(tmp_path / "views.py", {"predict_views": [1, 8]})
    study = sweep.load(file, "tiny")
    out = tmp_path / "sweep"
    first, second = sweep.plan(study, out, {"phantom": 8})
    assert first.stage3_from is None and second.stage3_from == first.run
    sweep.run_sweep(study, out, "tiny", progress=False)
    taken = [f for f in (second.run / "checkpoints" / "stage3").rglob("*") if f.is_file()]
    assert taken and all(f.stat().st_nlink == 2 for f in taken)
    timings = _timings(out)
    assert timings[second.run.name]["stage3"] < timings[first.run.name]["stage3"]


def test_a_finished_member_lends_its_stages_to_a_later_run_that_does_not_select_it(tmp_path):
    """One member run alone, then, in the same directory, only the member that shares its
    stage 2 and 3: those are hard links to the first member's, which is not touched."""
    file = _write_sweep(tmp_path / "views.py", {"predict_views": [1, 8]})
    out = tmp_path / "sweep"
    assert main(["sweep", str(file), "--size", "tiny", "--out", str(out), "--members", "predict_views=1,*"]) == 0
    before = _timings(out)
    assert main(["sweep", str(file), "--size", "tiny", "--out", str(out), "--members", "predict_views=8,*"]) == 0
    after = _timings(out)
    assert after["predict_views=1,seed=0"] == before["predict_views=1,seed=0"]
    for stage in ("stage2", "stage3"):
        taken = [f for f in (out / "runs" / "predict_views=8,seed=0" / "checkpoints" / stage).rglob("*")
                 if f.is_file()]
        assert taken and all(f.stat().st_nlink == 2 for f in taken)
        assert after["predict_views=8,seed=0"][stage] < after["predict_views=1,seed=0"][stage]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["member"] for row in rows] == ["predict_views=1,seed=0", "predict_views=8,seed=0"]


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
@pytest.mark.parametrize("schedule, warmup, shared", [("constant", 0, True), ("constant", 2, True),
                                                       ("constant", 3, False), ("cosine", 0, False)])
def test_durations_share_a_stage_only_where_the_schedule_ignores_them(tmp_path, stage, schedule, warmup, shared):
    file = _write_sweep(tmp_path / "durations.py", {f"{stage}.schedule": [schedule], f"{stage}.warmup_steps": [warmup],
                                                    f"{stage}.steps": [2, 4]})
    planned = {getattr(p.config, stage).steps: p for p in sweep.plan(sweep.load(file, "tiny"), tmp_path, {"phantom": 8})}
    longer, shorter = planned[4], planned[2]
    assert (getattr(shorter, f"{stage}_from") == longer.run) == shared
    assert getattr(longer, f"keep_{stage}") == ((2,) if shared else ())


@pytest.mark.parametrize("study", sorted(p.name for p in EXPERIMENTS.glob("*.py")))
def test_every_study_plans_and_checks_at_every_size(study, tmp_path):
    for size in sweep.SIZES:
        loaded = sweep.load(EXPERIMENTS / study, size)
        assert len(loaded.members) >= 2
        assert all(dict(m.overrides).get("seed") is not None for m in loaded.members)
        for member in loaded.members:
            loaded.config(member)  # every override is a valid key and value


# Each study runs its first member end to end; the rest differ only in a model, loss or
# setting that test_models, test_losses, test_train and the sweep tests above build and check.
MEMBERS_RUN = 1


def _run_study(file: Path, out: Path, members: list[str]) -> subprocess.CompletedProcess:
    command = _study_command(file, out) + ["--members", *members]
    return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True)


def test_every_study_runs_at_the_tiny_size(tmp_path):
    """Every study of experiments/ end to end, as a user starts it; two at a time, for the
    second core (the members of one study run in turn)."""
    files = sorted(EXPERIMENTS.glob("*.py"))
    members = {file: [m.name for m in sweep.load(file, "tiny").members][:MEMBERS_RUN] for file in files}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        runs = pool.map(lambda file: _run_study(file, tmp_path / file.stem, members[file]), files)
        done = dict(zip(files, runs))
    for file, result in done.items():
        assert result.returncode == 0, f"{file.name}: {result.stderr[-2000:]}"
        out, study = tmp_path / file.stem, sweep.load(file, "tiny")
        rows = json.loads((out / "results.json").read_text())["rows"]
        assert [row["member"] for row in rows] == members[file]
        assert all(row[f"{stage}.miou"] is not None for row in rows for stage in ("pseudo", "stage2", "stage3"))
        table = (out / "results.md").read_text()
        assert all(f"| {axis} |" in table for axis in study.axes) and (out / "results.png").exists()
        assert all((out / f"{figure}.png").exists() for figure in study.figures)
    pseudo_methods = json.loads((tmp_path / "table4_pseudo" / "results.json").read_text())["rows"]
    assert all(row["seconds.stage1"] > 0 for row in pseudo_methods)


def test_bad_sweeps_are_refused_before_any_work(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing.py"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = _write_sweep(tmp_path / "bad.py", {"data.crop": [32, 4096]})
    assert main(["sweep", str(bad), "--size", "tiny", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "sweep member data.crop=4096,seed=0" in err and "data.crop" in err
    assert not list((tmp_path / "b").glob("runs/*"))
    typo = _write_sweep(tmp_path / "typo.py", {"stage2.epoch": [1, 2]})
    assert main(["sweep", str(typo), "--size", "tiny", "--out", str(tmp_path / "c")]) == 2
    assert "unknown config key 'stage2.epoch'" in capsys.readouterr().err
    assert main(["sweep", "--status", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_another_sweep_or_a_changed_member_in_a_sweep_directory_is_refused(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"sweep": "other", "size": "tiny", "members": []}))
    study = sweep.load(_write_sweep(tmp_path / "s.py", {}, seeds=(0, 1)), "tiny")
    with pytest.raises(SrjaxError, match="holds the sweep 'other'"):
        sweep.run_sweep(study, out, "tiny", progress=False)

    # The same study may gain a member; a member it keeps may not change its settings.
    record = sweep._record(study, "tiny", "s.py")
    (out / "sweep.json").write_text(json.dumps(dict(record, members=record["members"][:1])))
    sweep._claim(out, record)
    changed = json.loads(json.dumps(record))
    changed["members"][1]["overrides"]["seed"] = 7
    sweep._claim(out, changed)  # not started yet: free to change
    sweep._claim(out, record)
    (out / "runs" / "seed=1").mkdir(parents=True)
    with pytest.raises(SrjaxError, match="ran member seed=1 with other settings"):
        sweep._claim(out, changed)


def test_results_markdown_gives_mean_and_sample_sd_per_axis_value():
    record = {"sweep": "s", "size": "tiny", "axes": ["loss.name"], "members": [{}] * 3}
    rows = [{"loss.name": "ce", "stage3.miou": 0.5}, {"loss.name": "ce", "stage3.miou": 0.7},
            {"loss.name": "focal", "stage3.miou": 0.4}]
    text = results.markdown(record, rows)
    assert "| ce | 2 |" in text and "0.600 ± 0.141" in text  # sd with ddof=1: 0.1414
    assert "| focal | 1 |" in text and "0.400" in text


def test_results_markdown_splits_every_axis_by_volume_with_the_iou_of_each_class():
    record = {"sweep": "s", "size": "tiny", "axes": ["volume", "variant"], "members": [{}] * 3}
    rows = [{"volume": "a", "variant": "x", "stage3.miou": 0.5, "stage3.iou.1": 0.2},
            {"volume": "a", "variant": "x", "stage3.miou": 0.7, "stage3.iou.1": 0.4},
            {"volume": "b", "variant": "x", "stage3.miou": 0.1, "stage3.iou.1": 0.9}]
    text = results.markdown(record, rows)
    assert "## variant on a" in text and "## variant on b" in text
    on_a = text[text.index("## variant on a"):text.index("## variant on b")]
    assert "| x | 2 |" in on_a and "0.600 ± 0.141" in on_a and "| stage3.iou.1 |" in on_a and "0.300 ± 0.141" in on_a


def test_scores_by_labelled_slices_start_every_sampler_from_no_labels():
    base = {"sparse.oracle_slices": 0, "sparse.sampler": "dids"}
    configs = {"n0": {}, "n1": {}, "r0": {"sparse.oracle_slices": 1, "sparse.sampler": "random"},
               "r1": {"sparse.oracle_slices": 1, "sparse.sampler": "random"}, "d0": {"sparse.oracle_slices": 3},
               "other": {"sparse.oracle_slices": 1}}
    record = {"base": base, "members": [{"name": name, "config": config} for name, config in configs.items()]}
    scores = {"n0": 0.5, "n1": 0.7, "r0": 0.6, "r1": 0.8, "d0": 0.9, "other": 0.1}
    rows = [{"member": name, "volume": "b" if name == "other" else "a", "stage3.miou": scores[name]}
            for name in configs]
    table = results.by_labelled_slices(record, rows)
    assert list(table) == ["a", "b"] and list(table["a"]) == ["random", "dids"]
    (c0, m0, sd0, n0), (c1, m1, sd1, n1) = table["a"]["random"]
    assert (c0, n0, c1, n1) == (0, 2, 1, 2)
    assert m0 == pytest.approx(0.6) and sd0 == pytest.approx(0.1414, abs=1e-4) and m1 == pytest.approx(0.7)
    assert [p[:2] for p in table["a"]["dids"]] == [(0, pytest.approx(0.6)), (3, 0.9)]
    assert table["b"] == {"dids": [(1, 0.1, 0.0, 1)]}


def test_members_that_differ_only_in_values_train_as_one_population(tmp_path):
    """Two seeds and two confidences: stage 2 trains as a population of two (one per seed),
    stage 3 as one of four, each member ending where it ends trained one by one."""
    file = _write_sweep(tmp_path / "values.py", {"stage3.confidence": [0.5, 0.7]}, seeds=(0, 1))
    study = sweep.load(file, "tiny")
    for populations in (True, False):
        sweep.run_sweep(study, tmp_path / str(populations), "tiny", populations=populations, progress=False)
    timings = _timings(tmp_path / "True")
    trains_stage2 = [p.member.name for p in sweep.plan(study, tmp_path, {"phantom": 8}) if p.stage2_from is None]
    assert len(trains_stage2) == 2  # one per seed; the other confidence takes it
    assert len({timings[name]["stage2"] for name in trains_stage2}) == 1  # one population's wall time
    assert len({t["stage3"] for t in timings.values()}) == 1
    for member in study.members:
        for stage in ("stage2", "stage3"):
            together, alone = (train.latest_params(tmp_path / str(p) / "runs" / member.name / "checkpoints" / stage)
                               for p in (True, False))
            for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(alone), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
