"""The Delta counts table on an S3-compatible server (moto on 127.0.0.1): racing hosts, kill -9.

Commits to S3 go through conditional writes (``If-None-Match``); moto implements them, as AWS S3,
MinIO and R2 do. Each writer is a separate process with its own ``VELOCAST_HOME`` (no shared
folder, no lock file): the table on S3 is all they share.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.test_store_delta import kill_writers, run_race
from tests.scale.conftest import AWS_ENV, BUCKET, S3Server, apply_env
from velocast.config import Settings
from velocast.data.ingest import ingest_file

pytest.importorskip("deltalake")


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {**AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
    apply_env(monkeypatch, variables)
    return variables


def test_two_hosts_ingest_overlapping_files_into_one_table_on_s3(
        real_subset_file: Path, tmp_path: Path, s3: S3Server, s3_env: dict[str, str]) -> None:
    location = f"s3://{BUCKET}/race-{tmp_path.name}/counts"
    run_race(real_subset_file, tmp_path, location, s3_env)
    keys = s3.keys(f"race-{tmp_path.name}/counts/")
    assert any("/_delta_log/" in k for k in keys) and any("month=2020-12/" in k for k in keys)


def test_a_writer_killed_mid_commit_on_s3_leaves_the_previous_version(
        real_subset_file: Path, tmp_path: Path, s3_env: dict[str, str]) -> None:
    location = f"s3://{BUCKET}/kill-{tmp_path.name}/counts"
    ingest_file(real_subset_file, settings=Settings(home=tmp_path / "home", store_uri=f"delta:{location}"))
    offsets = kill_writers(location, tmp_path / "home", s3_env, rounds=3, seed=5)
    assert offsets == sorted(offsets) and offsets[-1] >= 3
