"""Provenance: every row names the run that measured it, the metadata lists exactly
those runs, and a rerun measures everything again unless it resumes an interrupted
run of the same code on the same machine."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from experiments import __main__ as cli
from experiments.harness import grids, metadata, store
from experiments.measure import bhh, claims_measure, elementary_paths, exp_accuracy, overflow, sweep

TABLES = [name for names in cli.STEP_TABLES.values() for name in names]


@pytest.fixture
def tiny(monkeypatch):
    """The study's code path on a handful of cells; counts the cells each step measures."""
    measured = {"overflow": 0, "accuracy": 0, "speed": 0, "claims": 0}
    # The sources as they are now, whatever is edited while the test runs.
    digest = metadata.source_hash()
    monkeypatch.setattr(metadata, "source_hash", lambda: digest)

    def counting(step, measure):
        def counted(cell):
            measured[step] += 1
            return measure(cell)

        return counted

    monkeypatch.setattr(
        grids,
        "overflow_cells",
        lambda quick: overflow.cells(("float32",), ("shifted",), (0.0, 100.0, 1e3, 1e4), rows=4),
    )
    monkeypatch.setattr(
        grids,
        "accuracy",
        lambda quick: sweep.accuracy_cells(
            ["softmax[shifted]"], ["float32", "float64"], ["mnist"], [1.0, 1e2], ["normal"], 64
        ),
    )
    monkeypatch.setattr(
        grids,
        "speed",
        lambda quick: sweep.speed_cells(
            ["softmax[shifted]"], ["numpy"], ["float32"], [("mnist", 4096), ("imagenet", 8192)]
        ),
    )
    monkeypatch.setattr(overflow, "measure", counting("overflow", overflow.measure))
    monkeypatch.setattr(sweep, "measure_accuracy", counting("accuracy", sweep.measure_accuracy))
    monkeypatch.setattr(sweep, "measure_speed", counting("speed", sweep.measure_speed))

    def claims_rows():
        measured["claims"] += 3
        return [{"claim": c, "quantity": "q", "value": 0.5, "detail": ""} for c in (1, 2, 3)]

    monkeypatch.setattr(claims_measure, "all_measurements", claims_rows)
    frame = pd.DataFrame({"format": ["fp16", "bf16"], "vectors": [2, 2]})
    monkeypatch.setattr(bhh, "reproduce", lambda data=None: (frame, frame))
    exp_row = {**dict.fromkeys(exp_accuracy.COLUMNS, 1), "function": "exp", "dtype": "float32"}
    monkeypatch.setattr(exp_accuracy, "rows", lambda quick: [exp_row])
    path_row = dict.fromkeys(elementary_paths.COLUMNS, 1)
    monkeypatch.setattr(elementary_paths, "rows", lambda quick: [path_row])
    monkeypatch.setattr(cli, "redraw", lambda out: None)  # figures are not the point here
    return measured


def _main(out, *args):
    return cli.main([*args, "--quick", "--out", str(out), "--no-progress"])


def _check_described(out, name):
    """The rows' run ids are exactly the runs the metadata lists, with their counts;
    returns the row count per run."""
    rows = pd.read_csv(out / name)
    meta = metadata.read(out / name)
    counts = rows[store.RUN_ID].value_counts().to_dict()
    assert meta["complete"] is True
    assert {i: r["rows"] for i, r in meta["runs"].items()} == counts, name
    assert meta["rows"] == len(rows)
    return counts


def _edit_runs(path, **changes):
    """Change fields of every run recorded in a table's metadata (and the top level)."""
    meta = metadata.read(path)
    for record in [meta, *meta["runs"].values()]:
        record.update(changes)
    metadata.meta_path(path).write_text(json.dumps(meta))


def _interrupt(out, name, keep=0.5):
    """Make ``out/name`` look interrupted: part of its rows in ``.partial/``, the
    metadata marked incomplete (the same runs, so the same commit and machine)."""
    rows = pd.read_csv(out / name)
    partial = store.partial_path(out / name)
    partial.parent.mkdir(exist_ok=True)
    rows.iloc[: int(len(rows) * keep)].to_csv(partial, index=False)
    shutil.copyfile(metadata.meta_path(out / name), metadata.meta_path(partial))
    _edit_runs(partial, complete=False)
    return rows


def test_every_row_names_its_run_and_a_rerun_on_other_code_measures_everything(tiny, tmp_path):
    assert _main(tmp_path, "study") == 0
    first = set()
    for name in TABLES:
        first |= set(_check_described(tmp_path, name))
    assert len(first) == 1  # one run wrote every table
    assert not (tmp_path / cli.STUDY_MARKER).exists()
    assert not list((tmp_path / store.PARTIAL).glob("*.csv"))
    before = dict(tiny)
    for name in TABLES:  # as if measured at another commit (a committed results/)
        _edit_runs(tmp_path / name, git_commit="0" * 40)
    assert _main(tmp_path, "study") == 0
    assert tiny == {k: 2 * v for k, v in before.items()}  # every cell measured again
    second = set()
    for name in TABLES:
        second |= set(_check_described(tmp_path, name))
    assert len(second) == 1 and not second & first  # no row of the old run is left
    meta = metadata.read(tmp_path / "accuracy.csv")
    assert meta["git_commit"] == metadata.collect()["git_commit"]
    assert meta["cpu"] == metadata.machine()["cpu"]


def test_a_finished_table_of_the_same_code_is_measured_again(tiny, tmp_path):
    assert _main(tmp_path, "accuracy") == 0
    first = _check_described(tmp_path, "accuracy.csv")
    assert _main(tmp_path, "accuracy") == 0
    assert tiny["accuracy"] == 2 * sum(first.values())
    assert not set(_check_described(tmp_path, "accuracy.csv")) & set(first)


def test_an_interrupted_run_resumes_with_only_the_missing_cells(tiny, tmp_path):
    assert _main(tmp_path, "accuracy") == 0
    (old,) = _check_described(tmp_path, "accuracy.csv")
    whole = _interrupt(tmp_path, "accuracy.csv")
    tiny["accuracy"] = 0
    assert _main(tmp_path, "accuracy") == 0
    counts = _check_described(tmp_path, "accuracy.csv")
    assert tiny["accuracy"] == len(whole) - len(whole) // 2
    assert counts.pop(old) == len(whole) // 2 and list(counts.values()) == [tiny["accuracy"]]
    done = pd.read_csv(tmp_path / "accuracy.csv")
    assert len(done) == len(whole) and not done.duplicated(sweep.ACCURACY_KEY).any()
    assert not store.partial_path(tmp_path / "accuracy.csv").exists()


def test_an_interrupted_run_of_other_code_is_refused_until_told_what_to_do(tiny, tmp_path):
    assert _main(tmp_path, "accuracy") == 0
    (old,) = _check_described(tmp_path, "accuracy.csv")
    whole = _interrupt(tmp_path, "accuracy.csv")
    partial = store.partial_path(tmp_path / "accuracy.csv")
    _edit_runs(partial, git_commit="0" * 40)
    finished, kept = (tmp_path / "accuracy.csv").read_text(), partial.read_text()
    tiny["accuracy"] = 0
    with pytest.raises(SystemExit, match=r"(?s)git_commit '0000.*--fresh.*--keep"):
        _main(tmp_path, "accuracy")
    assert tiny["accuracy"] == 0  # nothing measured, nothing moved
    assert (tmp_path / "accuracy.csv").read_text() == finished and partial.read_text() == kept

    assert _main(tmp_path, "accuracy", "--keep") == 0  # both runs, listed apart
    counts = _check_described(tmp_path, "accuracy.csv")
    assert counts[old] == len(whole) // 2 and tiny["accuracy"] == len(whole) - len(whole) // 2
    meta = metadata.read(tmp_path / "accuracy.csv")
    assert meta["runs"][old]["git_commit"] == "0" * 40
    assert meta["git_commit"] == metadata.MIXED and len(meta["runs"]) == 2

    _interrupt(tmp_path, "accuracy.csv")
    _edit_runs(partial, git_commit="1" * 40)
    tiny["accuracy"] = 0
    assert _main(tmp_path, "accuracy", "--fresh") == 0
    (new,) = _check_described(tmp_path, "accuracy.csv")
    assert new not in counts and tiny["accuracy"] == len(whole)


def test_a_table_without_run_ids_is_replaced_and_cannot_be_kept(tiny, tmp_path):
    assert _main(tmp_path, "overflow") == 0
    path = tmp_path / "overflow.csv"
    legacy = pd.read_csv(path).drop(columns=store.RUN_ID)
    legacy.to_csv(path, index=False)  # as written before run ids, with one run's metadata
    metadata.meta_path(path).write_text(json.dumps({**metadata.collect(), "cpu": "Zilog Z80"}))
    with pytest.raises(SystemExit, match="no recorded run"):
        _main(tmp_path, "overflow", "--keep")
    tiny["overflow"] = 0
    assert _main(tmp_path, "overflow") == 0
    assert tiny["overflow"] == len(legacy)
    _check_described(tmp_path, "overflow.csv")


def test_an_interrupted_study_skips_the_steps_it_finished(tiny, tmp_path):
    assert _main(tmp_path, "study") == 0
    (first,) = _check_described(tmp_path, "speed.csv")
    # Interrupted in the speed step: claims not begun, speed half done.
    for name in ("claims.csv", "claims.meta.json"):
        (tmp_path / name).unlink()
    whole = _interrupt(tmp_path, "speed.csv")
    study = {"runs": metadata.read(tmp_path / "accuracy.csv")["runs"]}
    (tmp_path / cli.STUDY_MARKER).write_text(json.dumps(study))
    marker = json.dumps({"runs": {first: {**study["runs"][first], "cpu": "Zilog Z80"}}})
    tiny.update(dict.fromkeys(tiny, 0))

    (tmp_path / cli.STUDY_MARKER).write_text(marker)
    with pytest.raises(SystemExit, match=r"(?s)interrupted study.*cpu 'Zilog Z80'"):
        _main(tmp_path, "study")

    (tmp_path / cli.STUDY_MARKER).write_text(json.dumps(study))
    assert _main(tmp_path, "study") == 0
    assert tiny == {
        "overflow": 0,
        "accuracy": 0,
        "speed": len(whole) - len(whole) // 2,
        "claims": 3,
    }
    for name in TABLES:
        counts = _check_described(tmp_path, name)
        assert (first in counts) == (name != "claims.csv"), name
    assert len(_check_described(tmp_path, "speed.csv")) == 2
    assert not (tmp_path / cli.STUDY_MARKER).exists()


def test_a_cluster_sweep_stamps_its_run_on_every_row(tmp_path):
    distributed = pytest.importorskip("distributed")
    cells = sweep.accuracy_cells(
        ["softmax[shifted]"], ["float32", "float64"], ["mnist"], [1.0], ["normal"], 64
    )
    run = metadata.new_run({"quick": True, "scheduler": "inproc"})
    path = tmp_path / "accuracy.csv"
    columns = [*sweep.ACCURACY_COLUMNS, sweep.WORKER]
    with distributed.Client(n_workers=1, threads_per_worker=1, processes=False) as client:
        table = store.open_run(path, columns, sweep.ACCURACY_KEY, run)
        assert sweep.run(cells, sweep.measure_accuracy, table, "acc", False, client) == 2
    store.finish(table)
    rows = pd.read_csv(path)
    assert (rows[store.RUN_ID] == run["run_id"]).all() and rows[sweep.WORKER].notna().all()
    assert _check_described(tmp_path, "accuracy.csv") == {run["run_id"]: 2}


def test_a_torn_last_row_is_not_taken_for_another_run(tmp_path):
    run = metadata.new_run()
    table = store.open_run(tmp_path / "t.csv", ["a", "v"], ["a"], run)
    table.append([{"a": 1, "v": 0.5}, {"a": 2, "v": 1.5}])
    with open(table.path, "a") as f:
        f.write(f"3,2.5,{run['run_id'][:5]}")  # killed in the middle of a write
    assert store.plan(tmp_path / "t.csv", run)[0] == "resume"
    table = store.open_run(tmp_path / "t.csv", ["a", "v"], ["a"], run)
    assert table.done_keys() == {("1",), ("2",)}
    assert store.finish(table) == tmp_path / "t.csv"
    assert _check_described(tmp_path, "t.csv") == {run["run_id"]: 2}


def test_an_empty_table_names_the_run_that_found_nothing_to_measure(tmp_path):
    run = metadata.new_run()
    table = store.open_run(tmp_path / "t.csv", ["a", "v"], ["a"], run)
    assert sweep.run([], sweep.measure_accuracy, table, progress=False) == 0
    store.finish(table)
    assert list(metadata.read(tmp_path / "t.csv")["runs"]) == [run["run_id"]]
    assert metadata.read(tmp_path / "t.csv")["rows"] == 0


def test_a_benchmark_without_run_ids_measures_afresh_unless_it_resumes_itself(tmp_path):
    """roofline, torch-autograd and linear-ce: a finished table (or one from another
    commit) is removed before a run, so that its numbers are never passed off under
    this run's commit and date (the roofline step once rewrote the metadata of a
    table measured two weeks before and measured nothing); an unfinished one of this
    commit, an interrupted run, is kept and resumed."""
    path = tmp_path / "roofline.csv"

    def table_after_start(meta: dict | None) -> bool:
        path.write_text("a,b\n1,2\n")
        if meta is not None:
            metadata.meta_path(path).write_text(json.dumps(meta))
        metadata.start_or_resume(path)
        assert metadata.read(path)["complete"] is False
        return path.exists()

    this = metadata.collect()["git_commit"]
    assert not table_after_start(None)
    assert not table_after_start({"git_commit": this})  # written before `complete` existed
    assert not table_after_start({"git_commit": this, "complete": True})
    assert not table_after_start({"git_commit": "0" * 40, "complete": False})
    assert table_after_start({"git_commit": this, "complete": False})
    metadata.write_next_to(path)
    assert metadata.read(path)["complete"] is True
