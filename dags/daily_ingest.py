"""
### daily_ingest — new counts from the open-data portal and the inbox into the store

Every day, two steps calling `velocast.lifecycle.operations.daily`:
1. `fetch_from_portal` (`fetch_portal_counts`): the hourly counts published since the store's last
   ones (minus `$VELOCAST_OPENDATA_OVERLAP_HOURS`, for late corrections) are fetched from the Paris
   open-data portal (`$VELOCAST_OPENDATA_URL`), validated and upserted. A failure is logged and
   returned (`status: failed`, `error`), never raised, so the inbox below is still ingested. Not
   run with `synthetic=true`.
2. `ingest_new_files`: each counts file dropped into `$VELOCAST_HOME/inbox` (Paris open-data CSV
   export, the tidy Parquet/CSV, ...) is validated, its bad rows quarantined, its good rows upserted
   into the store, and the file moved to `inbox/done/`. A file that cannot be read at all is moved
   to `inbox/failed/` (with a `.error.txt`) and fails the run without retry; other errors (disk,
   locks) are retried. Copy files in under a `.tmp`/`.part` name or a hidden name, then rename:
   such names are left alone.

Params: `synthetic` (append one synthetic day — the day after the store's latest — instead of
waiting for real files; the portal is not fetched), `inbox` (another folder; empty: `$VELOCAST_HOME/inbox`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="daily_ingest",
    description="Fetch the open-data portal's new counts and ingest the inbox (or one synthetic day)",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "velocast", "retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["velocast", "data", "daily"],
    doc_md=__doc__,
    params={
        "synthetic": Param(False, type="boolean",
                           description="Append one synthetic day (the day after the latest stored one)."),
        "inbox": Param("", type="string", description="Inbox folder; empty: $VELOCAST_HOME/inbox."),
    },
)
def daily_ingest():
    @task
    def fetch_from_portal(params=None):
        from velocast.lifecycle.operations.daily import fetch_portal_counts

        return fetch_portal_counts(synthetic=params["synthetic"])

    @task(trigger_rule="all_done")
    def ingest_new_files(params=None):
        from airflow.sdk.exceptions import AirflowFailException

        from velocast.lifecycle.operations.daily import ingest_new_files as ingest

        result = ingest(params["inbox"] or None, synthetic=params["synthetic"])
        if result["failed"]:  # unreadable files: retrying will not help, a person must look
            raise AirflowFailException(
                f"{len(result['failed'])} file(s) could not be read, moved to inbox/failed: "
                + "; ".join(f"{f['file']}: {f['error']}" for f in result["failed"]))
        return result

    fetch_from_portal() >> ingest_new_files()


daily_ingest()
