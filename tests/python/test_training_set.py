"""Point-in-time training sets with pyarrow's Flight client alone (no ftab code): upload a
spine with DoPut, ask with GetFlightInfo, pull every endpoint with DoGet; the same with a
spine named by URI, and with DoExchange (the spine sent as the exchange's data).

Run by tests/python_client.rs against a real ftab-scheduler (FTAB_FLIGHT_URL) started with
several partitions, so a training set comes in several endpoints.
"""

import datetime as dt
import json
import os
import pathlib
import time
import uuid

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

URL = os.environ["FTAB_FLIGHT_URL"]
REPO = pathlib.Path(os.environ["FTAB_EXAMPLE_REPO"])

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def action(client, name, body):
    results = list(client.do_action(flight.Action(name, json.dumps(body).encode())))
    return json.loads(results[0].body.to_pybytes())


def put(client, command, table):
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, reader = client.do_put(descriptor, table.schema)
    writer.write_table(table)
    writer.done_writing()
    answer = json.loads(reader.read().to_pybytes())
    writer.close()
    return answer


def wait(client, job_id):
    deadline = time.time() + 120
    while time.time() < deadline:
        job = action(client, "get_job", {"job_id": job_id})
        if job["state"] in ("succeeded", "failed", "cancelled"):
            assert job["state"] == "succeeded", job
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def ingest_stats(client, workspace, at):
    """One user_merchant_stats row for (u1, m1) at `at`: 5 transactions, mean 12.5, max 40."""
    stats = pa.table(
        {
            "user_id": ["u1"],
            "merchant_id": ["m1"],
            "timestamp": pa.array([at], pa.timestamp("us", tz="UTC")),
            "transaction_count_7d": [5],
            "amount_mean_7d": [12.5],
            "amount_max_7d": [40.0],
        }
    )
    cmd = {"ingest": {"workspace": workspace, "table": "user_merchant_stats"}}
    wait(client, put(client, cmd, stats)["job_id"])


@pytest.fixture
def client():
    with flight.FlightClient(URL) as c:
        yield c


@pytest.fixture
def workspace(client):
    """A live workspace with the example repository and known login counts:
    users u0..u39 with values at now-3d, now-2d and now-1d (value = 100 * user + days ago),
    and user_merchant_stats for (u1, m1) at now-2d."""
    name = "py_" + uuid.uuid4().hex[:8]
    action(client, "create_workspace", {"name": name, "kind": "live"})
    files = [{"path": p.name, "content": p.read_text()} for p in sorted(REPO.glob("*.toml"))]
    action(client, "apply", {"workspace": name, "files": files})
    users, times, counts = [], [], []
    for user in range(40):
        for days in (3, 2, 1):
            users.append(f"u{user}")
            times.append(NOW - days * DAY)
            counts.append(100 * user + days)
    ingest_logins(client, name, users, times, counts)
    ingest_stats(client, name, NOW - 2 * DAY)
    return name


def ingest_logins(client, workspace, users, times, counts):
    """Ingest user_login_counts rows (both counts the same) and wait for the job."""
    logins = pa.table(
        {
            "user_id": users,
            "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "user_login_count_7d": counts,
            "user_login_count_30d": counts,
        }
    )
    cmd = {"ingest": {"workspace": workspace, "table": "user_login_counts"}}
    wait(client, put(client, cmd, logins)["job_id"])


def spine():
    """Every user at now-36h (sees the now-2d value), plus u1 at now-4d (sees nothing)
    and an unknown user."""
    users = [f"u{u}" for u in range(40)] + ["u1", "nobody"]
    times = [NOW - dt.timedelta(hours=36)] * 40 + [NOW - 4 * DAY, NOW]
    return pa.table(
        {
            "user_id": users,
            "merchant_id": ["m1"] * len(users),
            # pandas-style naive nanoseconds: taken as UTC.
            "event_time": pa.array([t.replace(tzinfo=None) for t in times], pa.timestamp("ns")),
            "label": list(range(len(users))),
        }
    )


def check(table):
    """The rows of the fraud_detection training set over spine()."""
    assert table.num_rows == 42
    rows = {(r["user_id"], r["label"]): r for r in table.to_pylist()}
    for user in range(40):
        row = rows[(f"u{user}", user)]
        assert row["user_login_counts__user_login_count_7d"] == 100 * user + 2, row
    early = rows[("u1", 40)]
    assert early["user_login_counts__user_login_count_7d"] is None
    assert early["user_merchant_stats__amount_mean_7d"] is None
    assert rows[("u1", 1)]["user_merchant_stats__amount_mean_7d"] == 12.5
    assert rows[("u1", 1)]["user_merchant_stats__transaction_count_7d"] == 5
    assert rows[("nobody", 41)]["user_login_counts__user_login_count_7d"] is None
    assert table.schema.field("event_time").type == pa.timestamp("ns"), "spine columns are kept as sent"
    assert table.schema.names[:4] == ["user_id", "merchant_id", "event_time", "label"]


def fetch_all(client, info):
    parts = []
    for endpoint in info.endpoints:
        parts.append(client.do_get(endpoint.ticket).read_all())
    return pa.concat_tables(parts)


def test_do_put_spine_then_get_flight_info_and_every_endpoint(client, workspace):
    name = "spine_" + uuid.uuid4().hex[:8]
    stored = put(client, {"spine": {"name": name}}, spine())
    assert stored["rows"] == 42 and stored["name"] == name

    command = {
        "training_set": {
            "workspace": workspace,
            "feature_service": "fraud_detection",
            "spine": {"name": name},
        }
    }
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(command).encode()))
    assert len(info.endpoints) >= 2, "one endpoint per output partition"
    assert info.total_records == 42
    metadata = json.loads(info.app_metadata)
    assert metadata["timestamp_column"] == "event_time"
    versions = {t["table"]: t["delta_version"] for t in metadata["tables"]}
    assert versions == {"user_login_counts": 0, "user_merchant_stats": 0}
    table = fetch_all(client, info)
    assert table.schema.equals(info.schema), "the rows have the announced schema"
    check(table)

    # A later ingest changes the answer unless the request is pinned to the versions read.
    later = pa.table(
        {
            "user_id": ["u0"],
            "timestamp": pa.array([NOW - 2 * DAY], pa.timestamp("us", tz="UTC")),
            "user_login_count_7d": [-1],
            "user_login_count_30d": [-1],
        }
    )
    wait(client, put(client, {"ingest": {"workspace": workspace, "table": "user_login_counts"}}, later)["job_id"])
    pinned = dict(command["training_set"], as_of=versions)
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(json.dumps({"training_set": pinned}).encode())
    )
    check(fetch_all(client, info))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(command).encode()))
    latest = {r["label"]: r for r in fetch_all(client, info).to_pylist()}
    assert latest[0]["user_login_counts__user_login_count_7d"] == -1


def test_spine_by_uri(client, workspace, tmp_path):
    path = tmp_path / "spine.parquet"
    pq.write_table(spine(), path, row_group_size=10)
    command = {
        "training_set": {
            "workspace": workspace,
            "features": ["user_login_counts.user_login_count_7d", "user_merchant_stats"],
            "spine": {"uri": path.as_uri()},
        }
    }
    info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(command).encode()))
    check(fetch_all(client, info))


def test_do_exchange_sends_the_spine_and_receives_the_training_set(client, workspace):
    command = {"training_set": {"workspace": workspace, "feature_service": "fraud_detection"}}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, reader = client.do_exchange(descriptor)
    data = spine()
    writer.begin(data.schema)
    writer.write_table(data, max_chunksize=7)
    writer.done_writing()
    check(reader.read_all())
    writer.close()


def test_errors_name_the_problem(client, workspace):
    bad = pa.table({"user_id": ["u1"], "when": ["yesterday"]})
    name = "bad_" + uuid.uuid4().hex[:8]
    put(client, {"spine": {"name": name}}, bad)
    command = {
        "training_set": {"workspace": workspace, "feature_service": "fraud_detection", "spine": {"name": name}}
    }
    # INVALID_ARGUMENT arrives as ArrowInvalid, NOT_FOUND as KeyError.
    with pytest.raises(pa.ArrowInvalid, match="the spine has no timestamp column"):
        client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(command).encode()))

    gone = dict(command["training_set"], spine={"name": "never_uploaded"})
    with pytest.raises(KeyError, match="spine `never_uploaded` does not exist or has expired"):
        client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps({"training_set": gone}).encode()))
