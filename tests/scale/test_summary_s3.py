"""summary.json on S3 written by two "hosts" at once: compare-and-swap, no shared lock, no lost entry.

Each writer is a separate process with its own ``VELOCAST_HOME`` (so no lock folder in common);
the object on the S3-compatible server (moto on 127.0.0.1) is all they share. Every append reads
the object with its ETag and writes it back with ``If-Match`` (``If-None-Match: *`` for the first),
and a writer that lost the race reads again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scale.conftest import AWS_ENV, BUCKET, ROOT, S3Server, apply_env

ENTRIES = 40
_WRITER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from velocast.tracking.summary import SummaryEntry, SummaryStore
uri, host = sys.argv[1], sys.argv[2]
store = SummaryStore(uri)
for i in range(int(sys.argv[3])):
    store.append(SummaryEntry(timestamp="2021-01-01T00:00:00", model_type="lgbm", env="dev", test_mode=False,
                              run_id=f"{host}-{i}", model_uri=f"s3://models/{host}/{i}", rmse=30.0 + i))
    print(i, flush=True)
"""


def test_two_hosts_append_to_summary_json_on_s3_without_losing_an_entry(
        s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    variables = {**AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
    apply_env(monkeypatch, variables)
    uri = f"s3://{BUCKET}/hosts-{tmp_path.name}/summary.json"
    writers = []
    for host in ("host-a", "host-b"):
        env = {**os.environ, **variables, "VELOCAST_HOME": str(tmp_path / host),
               "PYTHONPATH": str(ROOT / "src")}
        log = open(tmp_path / f"{host}.log", "wb")  # noqa: SIM115
        writers.append((subprocess.Popen([sys.executable, "-c", _WRITER, uri, host, str(ENTRIES)], env=env,
                                         stdout=subprocess.PIPE, stderr=log, text=True), log))
    for proc, log in writers:
        out, _ = proc.communicate(timeout=300)
        log.close()
        assert proc.returncode == 0, (tmp_path / "host-a.log").read_text()[-2000:]
        assert len(out.split()) == ENTRIES
    body = s3.client().get_object(Bucket=BUCKET, Key=f"hosts-{tmp_path.name}/summary.json")["Body"].read()
    runs = [e["run_id"] for e in json.loads(body)]
    assert sorted(runs) == sorted(f"{h}-{i}" for h in ("host-a", "host-b") for i in range(ENTRIES))
    for host in ("host-a", "host-b"):
        assert not (tmp_path / host / "locks").exists()  # nothing was locked anywhere
    # each host's own order is kept (appends, never reorders)
    for host in ("host-a", "host-b"):
        mine = [r for r in runs if r.startswith(host)]
        assert mine == [f"{host}-{i}" for i in range(ENTRIES)]
