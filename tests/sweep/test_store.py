"""The result store: run identity, atomic writes, resume after interruption (including a real kill)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from bnlab import BnlabError
from bnlab.sweep import LocalExecutor, ResultStore, config_hash, run_chunks
from bnlab.sweep.store import write_parquet_atomic


def test_config_hash_is_stable_and_order_independent():
    a = config_hash({"eps": [1e-3, 1.0], "d": 10, "nested": {"x": 1, "y": 2}})
    b = config_hash({"d": 10, "nested": {"y": 2, "x": 1}, "eps": [1e-3, 1.0]})
    assert a == b and len(a) == 12
    assert config_hash({"d": 11}) != config_hash({"d": 10})


def test_open_writes_config_and_environment_and_reuses_folder(tmp_path):
    store = ResultStore(tmp_path)
    run = store.open("demo", {"d": 3})
    assert run.read_json("config") == {"d": 3}
    env = run.read_json("environment")
    assert {"torch", "numpy", "python", "device", "git_commit", "time"} <= set(env)
    again = store.open("demo", {"d": 3})
    assert again.path == run.path
    assert store.open("demo", {"d": 4}).path != run.path
    assert [r.run_id for r in store.runs("demo")] == sorted(
        [run.run_id, store.open("demo", {"d": 4}).run_id], key=lambda i: (tmp_path / "demo" / i).stat().st_mtime
    )


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet_atomic(path, pd.DataFrame({"x": [1, 2]}))

    class Boom(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_parquet_atomic(path, Boom({"x": [3]}))
    assert pd.read_parquet(path).x.tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary left behind


def _square(spec):
    return pd.DataFrame({"x": [spec], "y": [spec * spec]})


class Interrupted(Exception):
    pass


def test_run_chunks_resumes_after_an_exception_without_recomputing(tmp_path):
    run = ResultStore(tmp_path).open("demo", {"n": 5})
    calls = []
    interrupt = [True]

    def flaky(spec):
        calls.append(spec)
        if spec == 3 and interrupt[0]:
            raise Interrupted
        return _square(spec)

    chunks = {f"c{i}": i for i in range(5)}
    with pytest.raises(Interrupted):
        run_chunks(run, chunks, flaky, LocalExecutor(), progress=False)
    assert sorted(p.stem for p in (run.path / "chunks").glob("*.parquet")) == ["c0", "c1", "c2"]
    calls.clear()
    interrupt[0] = False
    frame = run_chunks(run, chunks, flaky, LocalExecutor(), progress=False)
    assert calls == [3, 4]  # only the missing chunks
    assert frame.y.tolist() == [0, 1, 4, 9, 16] and frame.chunk.tolist() == list(chunks)


def test_corrupt_table_gives_clear_error(tmp_path):
    run = ResultStore(tmp_path).open("demo", {"n": 1})
    run.chunk_path("c0").parent.mkdir(parents=True)
    run.chunk_path("c0").write_bytes(b"not parquet")
    with pytest.raises(BnlabError, match="cannot read stored table"):
        run.read_chunk("c0")


KILLABLE = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from bnlab.sweep import ResultStore, run_chunks

    def slow(i):
        time.sleep(0.4)
        return pd.DataFrame({"i": [i], "t": [time.time()]})

    run = ResultStore(sys.argv[1]).open("killable", {"n": 8})
    frame = run_chunks(run, {f"c{i}": i for i in range(8)}, slow, progress=False)
    run.write_table("all", frame)
    run.mark_complete()
    """
)


def test_killed_and_restarted_run_loses_no_finished_chunk(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(KILLABLE)
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, str(script), str(root)])
    chunk_dir = None
    deadline = time.time() + 60
    while time.time() < deadline:
        found = list(root.glob("killable/*/chunks/*.parquet"))
        if len(found) >= 3:
            chunk_dir = found[0].parent
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert chunk_dir is not None, "no chunk was written before the deadline"
    before = {p.name: p.stat().st_mtime_ns for p in chunk_dir.glob("*.parquet")}
    assert 3 <= len(before) < 8
    subprocess.run([sys.executable, str(script), str(root)], check=True, timeout=60)
    after = {p.name: p.stat().st_mtime_ns for p in chunk_dir.glob("*.parquet")}
    assert len(after) == 8
    assert all(after[name] == mtime for name, mtime in before.items())  # finished chunks were not redone
    table = pd.read_parquet(chunk_dir.parent / "tables" / "all.parquet")
    assert table.i.tolist() == list(range(8))
