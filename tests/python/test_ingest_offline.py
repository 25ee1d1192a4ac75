"""Ingest with pyarrow's Flight client alone, then read the offline store with delta-rs's
Python package (`deltalake`): neither side is ftab code.

Run by tests/python_client.rs against a real ftab-scheduler (FTAB_FLIGHT_URL).
"""

import datetime as dt
import json
import os
import pathlib
import time
import urllib.parse
import uuid

import deltalake
import pyarrow as pa
import pyarrow.flight as flight
import pytest

URL = os.environ["FTAB_FLIGHT_URL"]
REPO = pathlib.Path(os.environ["FTAB_EXAMPLE_REPO"])


def action(client, name, body):
    results = list(client.do_action(flight.Action(name, json.dumps(body).encode())))
    return json.loads(results[0].body.to_pybytes())


def ingest(client, workspace, table):
    command = {"ingest": {"workspace": workspace, "table": "user_login_counts"}}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, reader = client.do_put(descriptor, table.schema)
    writer.write_table(table, max_chunksize=2)
    writer.done_writing()
    answer = json.loads(reader.read().to_pybytes())
    writer.close()
    return answer


def wait(client, job_id):
    deadline = time.time() + 120
    while time.time() < deadline:
        job = action(client, "get_job", {"job_id": job_id})
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def client():
    with flight.FlightClient(URL) as c:
        yield c


def test_pyarrow_ingest_then_deltalake_reads_the_offline_table(client):
    workspace = "py_" + uuid.uuid4().hex[:8]
    action(client, "create_workspace", {"name": workspace, "kind": "live"})
    files = [{"path": p.name, "content": p.read_text()} for p in sorted(REPO.glob("*.toml"))]
    action(client, "apply", {"workspace": workspace, "files": files})

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    day = dt.timedelta(days=1)
    first = pa.table(
        {
            "user_id": ["a", "b", "a"],
            "timestamp": pa.array([now - 2 * day, now - day, now - 2 * day], pa.timestamp("us", tz="UTC")),
            "user_login_count_7d": pa.array([1, 2, 3], pa.int32()),  # widened to int64
            "user_login_count_30d": [10, 20, 30],
        }
    )
    answer = ingest(client, workspace, first)
    assert answer["rows"] == 3 and answer["seq"] == 1
    job = wait(client, answer["job_id"])
    assert job["state"] == "succeeded", job
    assert job["counts"]["duplicates_dropped"] == 1

    # pandas-style naive nanosecond timestamps are taken as UTC.
    naive = (now - day).replace(tzinfo=None)
    second = pa.table(
        {
            "user_id": ["a"],
            "timestamp": pa.array([naive], pa.timestamp("ns")),
            "user_login_count_7d": [4],
            "user_login_count_30d": [40],
        }
    )
    job = wait(client, ingest(client, workspace, second)["job_id"])
    assert job["state"] == "succeeded", job

    described = action(client, "describe_table", {"workspace": workspace, "table": "user_login_counts"})
    location = urllib.parse.urlparse(described["offline_location"])
    assert location.scheme == "file"
    table = deltalake.DeltaTable(urllib.parse.unquote(location.path))
    # Partitioned by date, then by bucket: a hash of the join keys (docs/offline-store.md).
    assert table.metadata().partition_columns == ["_date", "_bucket"]
    buckets = int(table.metadata().configuration["ftab.buckets"])
    assert json.loads(table.metadata().configuration["ftab.bucketKeys"]) == ["user_id"]
    data = table.to_pyarrow_table().sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    rows = [
        (r["user_id"], r["timestamp"], r["user_login_count_7d"], r["_seq"], r["_date"])
        for r in data.to_pylist()
    ]
    assert rows == [
        ("a", now - 2 * day, 3, 1, (now - 2 * day).date()),
        ("a", now - day, 4, 2, (now - day).date()),
        ("b", now - day, 2, 1, (now - day).date()),
    ]
    assert data.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert data.schema.field("user_login_count_7d").type == pa.int64()
    assert all(r["_ingested_at"] is not None for r in data.to_pylist())
    assert all(0 <= r["_bucket"] < buckets for r in data.to_pylist())
    # One key, one bucket.
    assert len({r["_bucket"] for r in data.to_pylist() if r["user_id"] == "a"}) == 1

    # The online record of `a` is the later write.
    listing = list(client.list_flights(workspace.encode()))
    assert len(listing) == 2


def test_pyarrow_aborts_an_upload_and_nothing_is_stored(client):
    """A pyarrow uploader whose source fails half-way sends the abort message
    (docs/protocol.md): the scheduler stores nothing and answers CANCELLED with the reason,
    and the idempotency key stays free."""
    workspace = "py_" + uuid.uuid4().hex[:8]
    action(client, "create_workspace", {"name": workspace, "kind": "live"})
    files = [{"path": p.name, "content": p.read_text()} for p in sorted(REPO.glob("*.toml"))]
    action(client, "apply", {"workspace": workspace, "files": files})
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    table = pa.table(
        {
            "user_id": ["a", "b"],
            "timestamp": pa.array([now, now], pa.timestamp("us", tz="UTC")),
            "user_login_count_7d": [1, 2],
            "user_login_count_30d": [10, 20],
        }
    )
    command = {"ingest": {"workspace": workspace, "table": "user_login_counts", "idempotency_key": "k"}}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, reader = client.do_put(descriptor, table.schema)
    writer.write_table(table)
    writer.write_metadata(json.dumps({"abort": {"reason": "day.csv line 9: bad value"}}).encode())
    with pytest.raises(flight.FlightCancelledError, match="the client aborted the upload: day.csv line 9"):
        writer.done_writing()
        reader.read()
        writer.close()
    jobs = action(client, "list_jobs", {"workspace": workspace})
    assert jobs["jobs"] == []

    # The key is still free: the whole upload goes in under it.
    writer, reader = client.do_put(descriptor, table.schema)
    writer.write_table(table)
    writer.done_writing()
    answer = json.loads(reader.read().to_pybytes())
    writer.close()
    assert answer["replayed"] is False and answer["rows"] == 2
