"""The result store: chunk identity, the shared pool, lazy run folders, atomic files, resume, locks, provenance."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict

from bnlab import BnlabError
from bnlab.sweep import LocalExecutor, ResultStore, chunk_key, config_hash, run_chunks
from bnlab.sweep.files import finite_json, write_json_atomic, write_parquet_atomic
from bnlab.sweep.provenance import git_state
from sweep.chunkfns import logged, per_point, scaled, shifted, square  # tests/ is on the path (rootdir conftest)


def test_config_hash_is_stable_and_order_independent():
    a = config_hash({"eps": [1e-3, 1.0], "d": 10, "nested": {"x": 1, "y": 2}})
    b = config_hash({"d": 10, "nested": {"y": 2, "x": 1}, "eps": [1e-3, 1.0]})
    assert a == b and len(a) == 12
    assert config_hash({"d": 11}) != config_hash({"d": 10})


def test_chunk_key_hashes_what_determines_the_chunk_only():
    cfg = {"d": 10, "seeds": 2, "device": "cpu", "compile": "auto", "data_dir": "/a"}
    base = chunk_key(square, {"config": cfg, "seed": 0})
    # where and how fast it computes, and (for a per-seed chunk) how many seeds the grid has: not identity
    moved = {**cfg, "seeds": 5, "device": "cuda", "compile": False, "data_dir": "/b"}
    assert chunk_key(square, {"config": moved, "seed": 0}) == base
    assert chunk_key(square, {"config": {**cfg, "d": 11}, "seed": 0}) != base  # what it computes: identity
    assert chunk_key(square, {"config": cfg, "seed": 1}) != base
    assert chunk_key(logged, {"config": cfg, "seed": 0}) != base  # another function, another chunk
    # a chunk that is not per seed may depend on the number of seeds: it stays in its key
    assert chunk_key(square, {"config": cfg}) != chunk_key(square, {"config": {**cfg, "seeds": 5}})
    # numpy values hash by value, never by a (possibly elided) repr
    big = np.arange(5000.0)
    assert chunk_key(square, {"eps": big}) == chunk_key(square, {"eps": big.tolist()})
    assert chunk_key(square, {"eps": big}) != chunk_key(square, {"eps": big + np.eye(1, 5000, 2500)[0]})


class PointConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    scale: float = 2.0
    seeds: int = 2
    device: str = "cpu"


def test_chunk_key_of_a_config_object_and_a_partial_over_grid_points():
    """Specs holding the config object itself and a per-point ``partial``: keyed by value, by inner function."""
    spec = {"config": PointConfig(), "point": {"seed": 1}}
    key = chunk_key(partial(per_point, scaled), spec)
    assert key == chunk_key(
        partial(per_point, scaled), {"config": PointConfig(seeds=9, device="cuda"), "point": {"seed": 1}}
    )
    assert key != chunk_key(partial(per_point, shifted), spec)
    assert key != chunk_key(partial(per_point, scaled), {"config": PointConfig(scale=3.0), "point": {"seed": 1}})
    assert key != chunk_key(partial(per_point, scaled), {"config": PointConfig(), "point": {"seed": 2}})


def test_extending_seeds_of_per_point_chunks_computes_only_the_new_ones(tmp_path):
    store = ResultStore(tmp_path)
    counts = []
    for seeds in (2, 4):
        cfg = PointConfig(seeds=seeds)
        run = store.open("demo", cfg.model_dump())
        chunks = {f"seed{s}": {"config": cfg, "point": {"seed": s}} for s in range(seeds)}
        frame = run_chunks(run, chunks, partial(per_point, scaled), progress=False)
        counts.append(len(run.computed))
    assert counts == [2, 2] and frame.value.tolist() == [0.0, 2.0, 4.0, 6.0]
    assert run.pool.provenance(run.manifest()[0]["key"])["spec"]["config"]["scale"] == 2.0


def test_run_folder_appears_with_its_first_chunk_and_lists_its_chunks(tmp_path):
    store = ResultStore(tmp_path / "out")
    run = store.open("demo", {"n": 3}, profile="quick")
    assert not (tmp_path / "out").exists()  # nothing written before there is something to keep
    frame = run_chunks(run, {f"c{i}": {"x": i} for i in range(3)}, square, progress=False)
    assert frame.y.tolist() == [0, 1, 4] and frame.chunk.tolist() == ["c0", "c1", "c2"]
    assert run.read_json("config") == {"n": 3}
    assert run.read_json("run")["profile"] == "quick"
    assert {"torch", "numpy", "python", "device", "git_commit", "git_dirty", "time"} <= set(
        run.read_json("environment")
    )
    manifest = run.manifest()
    assert [e["label"] for e in manifest] == ["c0", "c1", "c2"]
    assert sorted(p.stem for p in (tmp_path / "out" / "chunks").glob("*.parquet")) == sorted(e["key"] for e in manifest)
    assert list((tmp_path / "out" / "chunks").glob(".*")) == []  # no lock file left
    assert store.open("demo", {"n": 3}).path == run.path and store.open("demo", {"n": 4}).path != run.path
    assert [r.run_id for r in store.runs("demo")] == [run.run_id]


def test_extending_seeds_computes_only_the_new_chunks(tmp_path):
    store = ResultStore(tmp_path)
    log = tmp_path / "calls.log"

    def sweep(seeds):
        cfg = {"d": 3, "seeds": seeds}
        run = store.open("demo", cfg)
        chunks = {f"seed-{s}": {"config": cfg, "seed": s, "log": str(log)} for s in range(seeds)}
        return run, run_chunks(run, chunks, logged, progress=False)

    first, _ = sweep(2)
    second, frame = sweep(4)
    assert len(first.computed) == 2 and len(second.computed) == 2  # 2 seeds, then 4: exactly 2 computed
    assert sorted(int(line.split()[0]) for line in log.read_text().splitlines()) == [0, 1, 2, 3]
    assert frame.value.tolist() == [0.0, 10.0, 20.0, 30.0]
    third, _ = sweep(1)  # a sub-grid: everything stored
    assert third.computed == [] and len(log.read_text().splitlines()) == 4
    assert len(list((tmp_path / "chunks").glob("*.parquet"))) == 4 and first.run_id != second.run_id


def test_each_chunk_records_where_it_was_computed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git repository: no commit recorded, no guess
    git_state.cache_clear()
    run = ResultStore(tmp_path / "out").open("demo", {"n": 1}, device="cpu")
    run_chunks(run, {"c0": {"x": 2}}, square, progress=False)
    meta = run.pool.provenance(run.manifest()[0]["key"])
    assert meta["spec"] == {"x": 2} and meta["fn"].endswith("chunkfns.square") and meta["seconds"] >= 0
    assert meta["environment"]["device"] == "cpu" and meta["environment"]["git_commit"] is None


def test_git_state_is_the_working_directorys_with_a_dirty_flag(tmp_path):
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    git_state.cache_clear()
    assert git_state(str(tmp_path)) == {"git_commit": head.stdout.strip(), "git_dirty": False}
    (tmp_path / "f.txt").write_text("b")
    git_state.cache_clear()
    assert git_state(str(tmp_path))["git_dirty"] is True
    git_state.cache_clear()


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        write_parquet_atomic(tmp_path / "a.parquet", pd.DataFrame({"x": [1]}))
        os.umask(0o077)
        write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.parquet").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_json_never_holds_nan_or_infinity(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float64("-inf")})
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "a": None,
        "b": [None, 1.5],
        "c": None,
    }
    assert finite_json({"x": (1.0, float("nan"))}) == {"x": [1.0, None]}


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_parquet_atomic(path, pd.DataFrame({"x": [1, 2]}))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("pyarrow.parquet.write_table", boom)
    with pytest.raises(RuntimeError):
        write_parquet_atomic(path, pd.DataFrame({"x": [3]}))
    assert pd.read_parquet(path).x.tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary left behind


def test_writing_into_a_read_only_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(BnlabError, match="cannot write .*Permission denied"):
            write_json_atomic(folder / "x.json", {})
    finally:
        folder.chmod(0o755)


class Interrupted(Exception):
    pass


def test_run_chunks_resumes_after_an_exception_without_recomputing(tmp_path):
    run = ResultStore(tmp_path).open("demo", {"n": 5})
    calls = []
    interrupt = [True]

    def flaky(spec):
        calls.append(spec["x"])
        if spec["x"] == 3 and interrupt[0]:
            raise Interrupted
        return square(spec)

    chunks = {f"c{i}": {"x": i} for i in range(5)}
    with pytest.raises(Interrupted):
        run_chunks(run, chunks, flaky, LocalExecutor(), progress=False)
    assert len(list(run.pool.path.glob("*.parquet"))) == 3 and list(run.pool.path.glob(".*")) == []
    calls.clear()
    interrupt[0] = False
    frame = run_chunks(run, chunks, flaky, LocalExecutor(), progress=False)
    assert calls == [3, 4]  # only the missing chunks
    assert frame.y.tolist() == [0, 1, 4, 9, 16] and frame.chunk.tolist() == list(chunks)


def test_a_failing_first_chunk_leaves_nothing_behind(tmp_path):
    def bad(spec):
        raise BnlabError("bad data")

    run = ResultStore(tmp_path / "out").open("demo", {"n": 1})
    with pytest.raises(BnlabError, match="bad data"):
        run_chunks(run, {"c0": {"x": 0}}, bad, progress=False)
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] in ([], ["out"])


def test_process_pool_executor_computes_the_same_chunks(tmp_path):
    chunks = {f"c{i}": {"x": i} for i in range(4)}
    local = run_chunks(ResultStore(tmp_path / "a").open("demo", {}), chunks, square, progress=False)
    with ProcessPoolExecutor(max_workers=2) as pool:
        run = ResultStore(tmp_path / "b").open("demo", {})
        remote = run_chunks(run, chunks, square, pool, progress=False)
    pd.testing.assert_frame_equal(local, remote)
    assert len(run.computed) == 4


def test_corrupt_chunk_gives_clear_error(tmp_path):
    run = ResultStore(tmp_path).open("demo", {"n": 1})
    run_chunks(run, {"c0": {"x": 1}}, square, progress=False)
    run.pool.file(run.manifest()[0]["key"]).write_bytes(b"not parquet")
    with pytest.raises(BnlabError, match="cannot read stored table"):
        run_chunks(run, {"c0": {"x": 1}}, square, progress=False)


def test_planning_store_counts_without_writing(tmp_path):
    store = ResultStore(tmp_path / "out")
    run_chunks(store.open("demo", {"n": 2}), {f"c{i}": {"x": i} for i in range(2)}, square, progress=False)
    before = sorted(p for p in (tmp_path / "out").rglob("*"))
    plan = store.plan("demo", {"n": 3})
    from bnlab.sweep import PlanReady

    with pytest.raises(PlanReady):
        run_chunks(plan, {f"c{i}": {"x": i} for i in range(3)}, square, progress=False)
    assert plan.plan == [(3, 2)] and sorted((tmp_path / "out").rglob("*")) == before


JOB = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from bnlab.sweep import ResultStore, run_chunks
    from sweep.chunkfns import logged

    n = 8
    run = ResultStore(sys.argv[1]).open("job", {"n": n})
    chunks = {f"c{i}": {"seed": i, "log": sys.argv[1] + ".log"} for i in range(n)}
    frame = run_chunks(run, chunks, logged, progress=False)
    run.write_table("all", frame)
    run.mark_complete()
    print(len(run.computed))
    """
)


def _job(tmp_path, root, sleep, **kwargs):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "CHUNK_SLEEP": str(sleep)}
    return subprocess.Popen(
        [sys.executable, str(script), str(root), tests], stdout=subprocess.PIPE, text=True, env=env, **kwargs
    )


def test_two_identical_runs_started_together_compute_each_chunk_once(tmp_path):
    root = tmp_path / "store"
    procs = [_job(tmp_path, root, 0.3) for _ in range(2)]
    counts = [int(p.communicate(timeout=120)[0].split()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    computed = [int(line.split()[0]) for line in (tmp_path / "store.log").read_text().splitlines()]
    assert sorted(computed) == list(range(8))  # every chunk computed exactly once, by one process or the other
    assert sum(counts) == 8
    table = pd.read_parquet(next(root.glob("job/*/tables/all.parquet")))
    assert table.seed.tolist() == list(range(8))


def test_killed_and_restarted_run_loses_no_finished_chunk(tmp_path):
    root = tmp_path / "store"
    proc = _job(tmp_path, root, 0.4)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(root.glob("chunks/*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in root.glob("chunks/*.parquet")}
    assert 3 <= len(before) < 8, "the job should have been killed mid-sweep"
    restarted = _job(tmp_path, root, 0.0)
    assert int(restarted.communicate(timeout=60)[0].split()[-1]) == 8 - len(before)
    after = {p.name: p.stat().st_mtime_ns for p in root.glob("chunks/*.parquet")}
    assert len(after) == 8
    assert all(after[name] == mtime for name, mtime in before.items())  # finished chunks were not redone
    table = pd.read_parquet(next(root.glob("job/*/tables/all.parquet")))
    assert table.seed.tolist() == list(range(8))
