"""summary.json: atomic appends under concurrency, champion flags, best-model lookup."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from velocast.tracking.summary import SummaryEntry, SummaryStore


def _entry(run_id: str, model_type: str = "lgbm", rmse: float = 30.0, **kw) -> SummaryEntry:
    return SummaryEntry(timestamp="2021-01-01T00:00:00", model_type=model_type, env=kw.pop("env", "dev"),
                        test_mode=kw.pop("test_mode", False), run_id=run_id, model_uri=f"file:///m/{run_id}",
                        rmse=rmse, r2=kw.pop("r2", 0.8), **kw)


def _writer(args: tuple[str, int]) -> None:
    uri, i = args
    store = SummaryStore(uri)
    for j in range(10):
        store.append(_entry(f"w{i}-{j}"))


def test_eight_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "summary.json")
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_writer, [(uri, i) for i in range(8)])
    runs = [e.run_id for e in SummaryStore(uri).read()]
    assert len(runs) == 80 and len(set(runs)) == 80
    json.loads(Path(uri).read_text())  # the file is valid JSON


def test_best_model_prefers_the_champion(tmp_path: Path) -> None:
    store = SummaryStore(str(tmp_path / "s.json"))
    for run, rmse in (("a", 30.0), ("b", 25.0), ("c", 40.0)):
        store.append(_entry(run, rmse=rmse))
    store.append(_entry("d", rmse=10.0, test_mode=True))
    store.append(_entry("x", model_type="rf", rmse=5.0))
    assert store.best_model("lgbm", "rmse", test_mode=False).run_id == "b"
    assert store.best_model("lgbm", "rmse").run_id == "d"
    assert store.best_model("lgbm", "r2", env="prod") is None
    store.set_champion("lgbm", "c")
    assert store.best_model("lgbm", "rmse").run_id == "c"
    assert [e.run_id for e in store.read() if e.is_champion] == ["c"]
    with pytest.raises(KeyError):
        store.set_champion("lgbm", "nope")


def test_updates_cannot_remove_entries(tmp_path: Path) -> None:
    store = SummaryStore(str(tmp_path / "s.json"))
    store.append(_entry("a"))
    with pytest.raises(RuntimeError, match="append-only"):
        store.update(lambda data: data.clear())
    assert len(store.read()) == 1
