"""kill -9 at random moments: summary.json writes, promotions and trainings always end consistent.

Each scenario forks a victim from ``victim.py`` (a parent that pre-imported velocast; see there)
that loops over the operation, SIGKILLs it after a seeded random delay, 20 times, and checks the
invariants after every kill:

(a) summary.json — a process appends entries and reports each id once ``append`` returned: the file
    is always valid JSON and holds every reported entry (and every entry of earlier rounds);
(b) promotion — ``velocast promote`` alternating between two versions: after ``recover()`` (which
    undoes a promotion that did not commit, never completes it) the ``champion`` alias, the single
    entry flagged ``is_champion`` and the ``to_version`` of the newest promotion/rollback audit row agree;
(c) training — ``velocast train --model-type baseline --model-test`` on a small synthetic home:
    after ``reconcile()`` every registered version is complete, its run FINISHED and its summary
    entry present, every summary entry's version exists, no run is left RUNNING, and the champion
    and the earlier summary entries are untouched.

The deterministic ``VELOCAST_FAULT`` points (a process dying exactly between two writes) complement
the random kills, which land wherever the timing puts them; the figures (kills, kills that hit
half-way, operations completed) are printed.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.faults

VICTIM = Path(__file__).with_name("victim.py")
KILLS = 20
SEED = 20_240_601
CLEAN_ENV = ("MLFLOW_TRACKING_URI", "VELOCAST_SUMMARY_URI", "VELOCAST_AUDIT_URL", "VELOCAST_API_KEY",
             "VELOCAST_WEBHOOK_URL", "VELOCAST_API_URL", "VELOCAST_EVENTS_FILE", "VELOCAST_FAULT", "VELOCAST_HOME")
FIGURES: dict[str, Any] = {}


class Forker:
    """The pre-loaded parent of ``victim.py``: start a victim, kill it, wait for it."""

    def __init__(self, workdir: Path):
        env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        self.proc = subprocess.Popen([sys.executable, str(VICTIM)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(workdir), bufsize=1)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="forker-reader").start()
        self._expect("ready", timeout=180)

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.strip().startswith("{"):
                self.lines.put(json.loads(line))

    def _expect(self, key: str, timeout: float) -> dict[str, Any]:
        message = self.lines.get(timeout=timeout)
        assert key in message, message
        return message

    def start(self, **command: Any) -> int:
        self.proc.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return int(self._expect("pid", timeout=30)["pid"])

    def kill(self, pid: int) -> dict[str, Any]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had died on its own (an error: its output file says why)
        return self.wait()

    def wait(self, timeout: float = 300) -> dict[str, Any]:
        return self._expect("exit", timeout=timeout)

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def forker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forker]:
    parent = Forker(tmp_path_factory.mktemp("victims"))
    yield parent
    parent.close()
    if FIGURES:
        print("\nkill -9 figures: " + json.dumps(FIGURES, indent=1))


def _output(path: Path) -> list[str]:
    """Complete lines the victim wrote (a kill can cut the last one)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.split("\n")[:-1]


def _reported(path: Path, prefix: str = "") -> list[str]:
    return [line for line in _output(path) if line.startswith(prefix) and not line.startswith(("started",))]


def _alive_check(path: Path, died: dict[str, Any]) -> None:
    """The victim must have been killed by our SIGKILL, not have died of an error."""
    assert died["signal"] == signal.SIGKILL, f"the victim died on its own: {died}\n" + "\n".join(_output(path)[-40:])


# ---------------------------------------------------------------------------------------- homes
def _synthetic_home(home: Path, seed: int) -> Any:
    from velocast.config import Settings
    from velocast.data import splits, synthetic
    from velocast.data.ingest import ingest_file

    settings = Settings(home=home)
    frame = synthetic.generate(counters=3, days=28, start="2021-03-01", seed=seed)
    path = synthetic.write(frame, home.parent / "synthetic.parquet")
    ingest_file(path, settings=settings)
    splits.record_split(settings=settings)
    return settings


def _train_once(forker: Forker, home: Path, out: Path) -> str:
    pid = forker.start(scenario="train", loop=False, out=str(out), env={"VELOCAST_HOME": str(home)})
    died = forker.wait()
    assert died["exit"] == 0, "\n".join(_output(out)[-40:])
    assert pid == died["pid"]
    return _reported(out, "trained")[-1].split()[1]


# ------------------------------------------------------------------------------ (a) summary.json
def test_summary_json_survives_kill_9(forker: Forker, tmp_path: Path) -> None:
    from velocast.tracking.summary import SummaryStore

    uri = str(tmp_path / "summary.json")
    rng = random.Random(SEED)
    reported: set[str] = set()
    appended_unreported = 0
    for round_ in range(KILLS):
        out = tmp_path / f"summary-{round_}.out"
        pid = forker.start(scenario="summary", uri=uri, tag=f"r{round_}", out=str(out), env={})
        time.sleep(rng.uniform(0.3, 1.5))
        _alive_check(out, forker.kill(pid))
        text = Path(uri).read_text(encoding="utf-8") if Path(uri).exists() else "[]"
        data = json.loads(text)  # always a whole, valid file
        ids = [d["run_id"] for d in data]
        assert len(ids) == len(set(ids)), "an entry was written twice"
        now = set(_reported(out, f"r{round_}-"))
        reported |= now
        missing = reported - set(ids)
        assert not missing, f"round {round_}: entries reported written are gone: {sorted(missing)[:5]}"
        extra = {i for i in ids if i.startswith(f"r{round_}-")} - now
        assert len(extra) <= 1, extra  # at most the entry being reported when the kill came
        appended_unreported += len(extra)
        assert SummaryStore(uri).read()  # and velocast reads it
    leftovers = list(tmp_path.glob(".summary.json.*.tmp"))
    FIGURES["summary"] = {"kills": KILLS, "entries_written": len(json.loads(Path(uri).read_text())),
                          "entries_reported": len(reported), "written_not_yet_reported_at_kill": appended_unreported,
                          "temporary_files_left": len(leftovers)}
    assert len(leftovers) <= 1  # a killed writer's temporary file is removed by the next writer
    assert len(reported) >= KILLS  # the victims really wrote (at least one entry per round on average)


# ------------------------------------------------------------------------------- (b) promotion
def _promotion_state(settings: Any) -> dict[str, Any]:
    from velocast.lifecycle.decisions.promotion import history
    from velocast.tracking.registry import PREVIOUS, Registry

    registry = Registry(settings)
    champion = registry.champion("baseline")
    previous = registry.by_alias("baseline", PREVIOUS)
    flagged = [e for e in registry.summary.read() if e.model_type == "baseline" and e.is_champion]
    newest = history("baseline", settings, limit=1)
    return {"alias": champion.version if champion else None, "previous": previous.version if previous else None,
            "flagged": [(e.model_version, e.run_id) for e in flagged],
            "run_of": {r.version: r.run_id for r in registry.versions("baseline", include_pending=True)},
            "history_to": newest[0].to_version if newest else None}


def _assert_promotion_consistent(state: dict[str, Any], versions: tuple[str, str]) -> None:
    alias = state["alias"]
    assert alias in versions, state
    assert len(state["flagged"]) == 1, state
    assert state["flagged"][0] == (alias, state["run_of"][alias]), state
    assert state["history_to"] == alias, state
    assert state["previous"] in (None, *[v for v in versions if v != alias]), state


@pytest.fixture(scope="module")
def promotion_home(forker: Forker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from velocast.lifecycle.decisions.promotion import promote

    home = tmp_path_factory.mktemp("promotion") / "home"
    settings = _synthetic_home(home, seed=3)
    v1 = _train_once(forker, home, home.parent / "setup-1.out")
    v2 = _train_once(forker, home, home.parent / "setup-2.out")
    promote("baseline", version=v1, reason="first champion", force=True, settings=settings)
    return {"home": home, "settings": settings, "versions": (v1, v2)}


def test_promotion_survives_kill_9(forker: Forker, promotion_home: dict[str, Any], tmp_path: Path) -> None:
    from velocast.lifecycle.decisions.promotion import _journal, recover

    settings, versions = promotion_home["settings"], promotion_home["versions"]
    rng = random.Random(SEED + 1)
    figures: Counter = Counter()
    for round_ in range(KILLS):
        before = _promotion_state(settings)
        order = [v for v in versions if v != before["alias"]] + [before["alias"]]
        out = tmp_path / f"promote-{round_}.out"
        pid = forker.start(scenario="promote", model_type="baseline", versions=order, out=str(out),
                           env={"VELOCAST_HOME": str(promotion_home["home"])})
        time.sleep(rng.uniform(0.5, 5.0))
        _alive_check(out, forker.kill(pid))
        figures["promotions_completed"] += len(_reported(out, "promoted"))
        journal = _journal(settings, "baseline").exists()
        figures["kills_leaving_a_journal"] += journal
        raw = _promotion_state(settings)
        # the alias and the audit history are the transaction: apart only with a journal to undo it;
        # summary.json's flags are a view that recovery brings in line, journal or not
        split = raw["history_to"] != raw["alias"]
        stale = len(raw["flagged"]) != 1 or raw["flagged"][0][0] != raw["alias"]
        figures["kills_leaving_alias_history_apart"] += split
        figures["kills_leaving_summary_flags_behind"] += stale
        assert split <= journal, f"round {round_}: state split with no journal to repair it: {raw}"
        assert recover("baseline", settings) == journal
        _assert_promotion_consistent(_promotion_state(settings), versions)
    assert not recover("baseline", settings)
    FIGURES["promotion"] = {"kills": KILLS, **figures}
    assert figures["promotions_completed"] >= KILLS  # the victims really promoted between kills


@pytest.mark.parametrize("point", ["after_alias", "after_audit"])
def test_promotion_dying_between_two_writes(forker: Forker, promotion_home: dict[str, Any], tmp_path: Path,
                                            point: str) -> None:
    """Dying before the audit row (the commit point) is undone; after it, only the view is left behind."""
    from velocast.lifecycle.decisions.promotion import recover

    settings, versions = promotion_home["settings"], promotion_home["versions"]
    recover("baseline", settings)
    before = _promotion_state(settings)
    target = next(v for v in versions if v != before["alias"])
    out = tmp_path / "fault.out"
    forker.start(scenario="promote", model_type="baseline", versions=[target], out=str(out),
                 env={"VELOCAST_HOME": str(promotion_home["home"]), "VELOCAST_FAULT": f"promotion:{point}"})
    assert forker.wait()["exit"] == 137
    split = _promotion_state(settings)
    assert split["alias"] == target and split["flagged"] == before["flagged"]  # the view is behind
    if point == "after_alias":
        assert split["history_to"] == before["alias"]  # apart...
        assert recover("baseline", settings)           # ...until undone
        after = _promotion_state(settings)
        _assert_promotion_consistent(after, versions)
        assert after["alias"] == before["alias"]  # a promotion that did not commit never completes later
    else:
        assert split["history_to"] == target        # committed: the promotion stands
        assert recover("baseline", settings)        # its journal is found committed; the flags follow
        after = _promotion_state(settings)
        _assert_promotion_consistent(after, versions)
        assert after["alias"] == target


# -------------------------------------------------------------------------------- (c) training
def _training_state(settings: Any) -> dict[str, Any]:
    import mlflow

    from velocast.tracking.registry import Registry

    registry = Registry(settings)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    runs = {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id], max_results=5000)}
    versions = registry.versions("baseline", include_pending=True)
    entries = [e for e in registry.summary.read() if e.model_type == "baseline"]
    champion = registry.champion("baseline")
    return {"versions": {v.version: (v.run_id, v.complete) for v in versions}, "runs": runs,
            "entries": entries, "champion": champion.version if champion else None,
            "latest": (registry.latest("baseline") or champion).version,
            "locks": sorted(p.name for p in (settings.locks_dir / "training").glob("*.lock"))}


def _assert_training_consistent(state: dict[str, Any], champion: str, first_entries: list[Any]) -> None:
    entry_of = {e.run_id: e for e in state["entries"]}
    for version, (run_id, complete) in state["versions"].items():
        assert complete, f"version {version} is still pending"
        assert state["runs"].get(run_id) == "FINISHED", (version, run_id, state["runs"].get(run_id))
        assert run_id in entry_of and entry_of[run_id].model_version == version, f"version {version}: no entry"
    registered = {run_id for run_id, _ in state["versions"].values()}
    assert {e.run_id for e in state["entries"]} == registered, "a summary entry names no registered version"
    assert "RUNNING" not in state["runs"].values(), state["runs"]
    assert state["champion"] == champion
    assert [e.to_dict() for e in state["entries"][:len(first_entries)]] == [e.to_dict() for e in first_entries]
    assert [e.run_id for e in state["entries"] if e.is_champion] == [state["versions"][champion][0]]
    assert not state["locks"]


@pytest.fixture(scope="module")
def training_home(forker: Forker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from velocast.lifecycle.decisions.promotion import promote

    home = tmp_path_factory.mktemp("training") / "home"
    settings = _synthetic_home(home, seed=5)
    v1 = _train_once(forker, home, home.parent / "setup.out")
    promote("baseline", version=v1, reason="champion before the kills", force=True, settings=settings)
    return {"home": home, "settings": settings, "champion": v1}


def test_training_survives_kill_9(forker: Forker, training_home: dict[str, Any], tmp_path: Path) -> None:
    from velocast.lifecycle.training.train import reconcile
    from velocast.tracking.summary import SummaryStore

    settings, champion = training_home["settings"], training_home["champion"]
    first_entries = SummaryStore(settings=settings).read()
    rng = random.Random(SEED + 2)
    figures: Counter = Counter()
    for round_ in range(KILLS):
        out = tmp_path / f"train-{round_}.out"
        pid = forker.start(scenario="train", seed=round_, out=str(out),
                           env={"VELOCAST_HOME": str(training_home["home"])})
        time.sleep(rng.uniform(0.5, 9.0))
        _alive_check(out, forker.kill(pid))
        figures["trainings_completed"] += len(_reported(out, "trained"))
        raw = _training_state(settings)
        pending = [v for v, (_, complete) in raw["versions"].items() if not complete]
        figures["kills_leaving_a_pending_version"] += bool(pending)
        figures["kills_leaving_a_running_run"] += "RUNNING" in raw["runs"].values()
        assert raw["latest"] not in pending  # lookups never pick a half-trained version
        repaired = reconcile(settings)
        figures["repairs"] += len(repaired)
        _assert_training_consistent(_training_state(settings), champion, first_entries)
    FIGURES["training"] = {"kills": KILLS, **figures}
    assert figures["trainings_completed"] >= KILLS // 2


@pytest.mark.parametrize("point,entry_written,run_status", [("after_register", False, "RUNNING"),
                                                             ("after_summary", True, "RUNNING"),
                                                             ("after_run", True, "FINISHED")])
def test_training_dying_between_two_writes(forker: Forker, training_home: dict[str, Any], tmp_path: Path,
                                           point: str, entry_written: bool, run_status: str) -> None:
    from velocast.lifecycle.decisions.promotion import PromotionError, promote
    from velocast.lifecycle.training.train import reconcile
    from velocast.tracking.summary import SummaryStore

    settings, champion = training_home["settings"], training_home["champion"]
    reconcile(settings)
    first_entries = SummaryStore(settings=settings).read()
    out = tmp_path / "fault.out"
    forker.start(scenario="train", loop=False, out=str(out),
                 env={"VELOCAST_HOME": str(training_home["home"]), "VELOCAST_FAULT": f"train:{point}"})
    assert forker.wait()["exit"] == 137, "\n".join(_output(out)[-30:])
    raw = _training_state(settings)
    pending = [v for v, (_, complete) in raw["versions"].items() if not complete]
    assert len(pending) == 1  # what a kill at this point leaves: a pending version...
    run_id = raw["versions"][pending[0]][0]
    assert raw["runs"][run_id] == run_status
    assert (run_id in {e.run_id for e in raw["entries"]}) == entry_written
    assert raw["latest"] != pending[0]  # ...that lookups ignore...
    with pytest.raises(PromotionError, match="incomplete"):  # ...and nobody can promote
        promote("baseline", version=pending[0], settings=settings)
    assert reconcile(settings)
    after = _training_state(settings)
    _assert_training_consistent(after, champion, first_entries)
    assert (pending[0] in after["versions"]) == entry_written  # finished if in summary.json, else deleted
