"""The feature server's HTTP API, asked with Python's standard library (urllib) alone,
against a real ftab-scheduler (FTAB_HTTP_URL; data set up over Flight with pyarrow,
FTAB_FLIGHT_URL). Golden requests and answers, every refusal, a batch of many keys,
ttl expiry, and the online answer equal to a training set's at "now".

Run by tests/python_client.rs.
"""

import datetime as dt
import json
import os
import pathlib
import time
import urllib.error
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from test_training_set import action, ingest_logins, ingest_stats, put, wait

HTTP = os.environ["FTAB_HTTP_URL"]
FLIGHT = os.environ["FTAB_FLIGHT_URL"]
REPO = pathlib.Path(os.environ["FTAB_EXAMPLE_REPO"])
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)

# A table with a 3-second ttl and an integer key, beside the example repository.
EXTRA = """
[[entity]]
name = "device"
join_keys = ["device_id"]

[[feature_table]]
name = "device_pings"
entities = ["device"]
timestamp_field = "timestamp"
online = true
offline = true
ttl = "3s"
schema = [
  { name = "device_id", type = "int64" },
  { name = "timestamp", type = "timestamp" },
  { name = "pings", type = "int64" },
]

[[feature_table]]
name = "offline_only"
entities = ["device"]
timestamp_field = "timestamp"
online = false
offline = true
schema = [
  { name = "device_id", type = "int64" },
  { name = "timestamp", type = "timestamp" },
  { name = "x", type = "int64" },
]
"""


def post(path, body):
    """POST JSON; (status, answer as JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        HTTP + path, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get_features(params):
    return post("/v1/feature-service/get-features", {"params": params})


@pytest.fixture(scope="module")
def served():
    """A live workspace: u0..u199 logins at now-1h (value 10 * user), older values at
    now-5h, merchant stats for (u1, m1); a dev workspace with the same definitions."""
    with flight.FlightClient(FLIGHT) as client:
        name = "serve_" + uuid.uuid4().hex[:8]
        files = [{"path": p.name, "content": p.read_text()} for p in sorted(REPO.glob("*.toml"))]
        files.append({"path": "extra.toml", "content": EXTRA})
        action(client, "create_workspace", {"name": name, "kind": "live"})
        action(client, "apply", {"workspace": name, "files": files})
        action(client, "create_workspace", {"name": name + "_dev", "kind": "dev"})
        action(client, "apply", {"workspace": name + "_dev", "files": files})
        users = [f"u{u}" for u in range(200)] * 2
        times = [NOW - HOUR] * 200 + [NOW - 5 * HOUR] * 200
        counts = [10 * u for u in range(200)] + [-1] * 200
        ingest_logins(client, name, users, times, counts)
        ingest_stats(client, name, NOW - 2 * HOUR)
    # A serving process knows the workspace once it has copied the definitions.
    deadline = time.time() + 10
    while get_features({"workspace_name": name, "features": ["user_login_counts"],
                        "join_key_map": {"user_id": "u1"}})[0] != 200:
        assert time.time() < deadline, "the workspace was not served within 10 s"
        time.sleep(0.1)
    yield name


def eventually(params, expected, within=10):
    """Ask until the answer is `expected` (a serving process copies the definitions from
    the scheduler every second, so an apply reaches it a moment later)."""
    deadline = time.time() + within
    while True:
        status, answer = get_features(params)
        if (status, answer) == (200, expected):
            return
        assert time.time() < deadline, (status, answer)
        time.sleep(0.1)


def test_one_entity_with_every_metadata_option(served):
    status, answer = get_features(
        {
            "workspace_name": served,
            "feature_service_name": "fraud_detection",
            "join_key_map": {"user_id": "u1", "merchant_id": "m1"},
            "metadata_options": {
                "include_names": True,
                "include_data_types": True,
                "include_effective_times": True,
                "include_serving_status": True,
            },
        }
    )
    assert status == 200, answer
    at = lambda t: t.isoformat().replace("+00:00", "Z")
    assert answer == {
        "result": {"features": [10, 10, 12.5, 5]},
        "metadata": {
            "features": [
                {"name": "user_login_counts.user_login_count_7d", "data_type": {"type": "int64"},
                 "effective_time": at(NOW - HOUR), "status": "present"},
                {"name": "user_login_counts.user_login_count_30d", "data_type": {"type": "int64"},
                 "effective_time": at(NOW - HOUR), "status": "present"},
                {"name": "user_merchant_stats.amount_mean_7d", "data_type": {"type": "float64"},
                 "effective_time": at(NOW - 2 * HOUR), "status": "present"},
                {"name": "user_merchant_stats.transaction_count_7d", "data_type": {"type": "int64"},
                 "effective_time": at(NOW - 2 * HOUR), "status": "present"},
            ]
        },
    }


def test_a_list_of_features_and_no_metadata(served):
    status, answer = get_features(
        {
            "workspace_name": served,
            "features": ["user_merchant_stats.amount_max_7d", "user_login_counts.user_login_count_30d"],
            "join_key_map": {"user_id": "u7", "merchant_id": "m1"},
        }
    )
    assert status == 200, answer
    assert answer == {"result": {"features": [None, 70]}}


def test_a_batch_of_many_keys(served):
    keys = [{"join_key_map": {"user_id": f"u{u}", "merchant_id": "m1"}} for u in range(0, 400, 2)]
    status, answer = post(
        "/v1/feature-service/get-features-batch",
        {
            "params": {
                "workspace_name": served,
                "feature_service_name": "fraud_detection",
                "request_data": keys,
                "metadata_options": {"include_names": True, "include_serving_status": True},
            }
        },
    )
    assert status == 200, answer
    assert [f["name"] for f in answer["metadata"]["features"]] == [
        "user_login_counts.user_login_count_7d",
        "user_login_counts.user_login_count_30d",
        "user_merchant_stats.amount_mean_7d",
        "user_merchant_stats.transaction_count_7d",
    ]
    assert len(answer["result"]) == 200
    for i, row in enumerate(answer["result"]):
        user = 2 * i
        if user < 200:
            assert row["features"][:2] == [10 * user, 10 * user], row
            assert row["statuses"][:2] == ["present", "present"], row
        else:
            assert row["features"][:2] == [None, None], row
            assert row["statuses"][:2] == ["missing", "missing"], row
        assert row["statuses"][2:] == ["missing", "missing"], row


def test_values_expire_with_the_ttl(served):
    with flight.FlightClient(FLIGHT) as client:
        pings = pa.table(
            {
                "device_id": [7],
                "timestamp": pa.array([dt.datetime.now(dt.timezone.utc)], pa.timestamp("us", tz="UTC")),
                "pings": [3],
            }
        )
        cmd = {"ingest": {"workspace": served, "table": "device_pings"}}
        wait(client, put(client, cmd, pings)["job_id"])
    params = {
        "workspace_name": served,
        "features": ["device_pings"],
        "join_key_map": {"device_id": 7},
        "metadata_options": {"include_serving_status": True},
    }
    status, fresh = get_features(params)
    assert status == 200, fresh
    if fresh["metadata"]["features"][0]["status"] == "present":
        assert fresh["result"]["features"] == [3]
    deadline = time.time() + 30
    while True:
        status, answer = get_features(params)
        assert status == 200, answer
        if answer["metadata"]["features"][0]["status"] == "expired":
            break
        assert time.time() < deadline, answer
        time.sleep(0.2)
    assert answer["result"]["features"] == [None], "an expired value is not served"
    # The key as a string of digits is the same key.
    status, same = get_features({**params, "join_key_map": {"device_id": "7"}})
    assert (status, same) == (200, answer)


@pytest.mark.parametrize(
    "params, code, says",
    [
        ({"workspace_name": "no_such_ws", "feature_service_name": "fraud_detection",
          "join_key_map": {"user_id": "u1"}}, 404, "workspace `no_such_ws` does not exist"),
        ({"feature_service_name": "nope", "join_key_map": {"user_id": "u1"}}, 404,
         "feature service `nope` does not exist"),
        ({"features": ["user_login_counts.nope"], "join_key_map": {"user_id": "u1"}}, 404,
         "has no feature `nope`"),
        ({"features": ["no_table"], "join_key_map": {"user_id": "u1"}}, 404, "no_table"),
        ({"features": ["offline_only"], "join_key_map": {"device_id": 1}}, 400,
         "is not online (online = false)"),
        ({"feature_service_name": "fraud_detection", "join_key_map": {"user_id": "u1"}}, 400,
         "join key `merchant_id` is missing"),
        ({"feature_service_name": "fraud_detection",
          "join_key_map": {"user_id": "u1", "merchant_id": "m1", "userid": "x"}}, 400,
         "`userid` is not a join key of the requested features"),
        ({"features": ["device_pings"], "join_key_map": {"device_id": "seven"}}, 400,
         "is not an integer"),
        ({"features": ["device_pings"], "join_key_map": {"device_id": [7]}}, 400,
         "not a string or a number"),
        ({"feature_service_name": "fraud_detection", "features": ["device_pings"],
          "join_key_map": {"device_id": 7}}, 400, "not both"),
        ({"join_key_map": {"user_id": "u1"}}, 400, "names no features"),
    ],
)
def test_refusals_say_what_is_wrong(served, params, code, says):
    params = {"workspace_name": served, **params}
    status, answer = get_features(params)
    assert status == code, answer
    assert answer["error"]["code"] == code
    assert says in answer["error"]["message"], answer


def test_design_paths_and_a_bare_body(served):
    """DESIGN.md's paths and field names, with no `params` envelope, answer the same."""
    body = {"workspace": served, "feature_service": "fraud_detection",
            "join_key_map": {"user_id": "u1", "merchant_id": "m1"}}
    assert post("/v1/get-features", body) == (200, {"result": {"features": [10, 10, 12.5, 5]}})
    batch = {"workspace": served, "features": ["user_login_counts.user_login_count_7d"],
             "request_data": [{"join_key_map": {"user_id": "u2"}}, {"join_key_map": {"user_id": "u9"}}]}
    assert post("/v1/get-features-batch", batch) == (
        200, {"result": [{"features": [20]}, {"features": [90]}]})
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(HTTP + path, timeout=10) as response:
            assert response.read() == b"ok"


def test_a_dev_workspace_and_malformed_requests_are_refused(served):
    status, answer = get_features(
        {"workspace_name": served + "_dev", "feature_service_name": "fraud_detection",
         "join_key_map": {"user_id": "u1", "merchant_id": "m1"}}
    )
    assert status == 400 and "is a dev workspace" in answer["error"]["message"], answer
    status, answer = post("/v1/feature-service/get-features", b"{not json")
    assert status == 400 and "not a valid request" in answer["error"]["message"], answer
    status, answer = post("/v1/feature-service/get-features", {"workspace_name": served})
    assert status == 400 and "params" in answer["error"]["message"], answer
    status, answer = post("/v1/feature-service/get-features-batch",
                          {"params": {"workspace_name": served, "feature_service_name": "fraud_detection",
                                      "request_data": []}})
    assert status == 400 and "no entities" in answer["error"]["message"], answer
    status, answer = post("/v1/nothing-here", {})
    assert status == 404 and "no such endpoint" in answer["error"]["message"], answer
    with urllib.request.urlopen(HTTP + "/health", timeout=10) as response:
        assert response.read() == b"ok"


def test_the_online_answer_is_the_training_set_at_now(served):
    """For every user, the served value equals a training set's at a spine time of now."""
    users = [f"u{u}" for u in range(0, 210, 3)]
    status, answer = post(
        "/v1/feature-service/get-features-batch",
        {"params": {"workspace_name": served, "features": ["user_login_counts"],
                    "request_data": [{"join_key_map": {"user_id": u}} for u in users]}},
    )
    assert status == 200, answer
    online = {u: row["features"] for u, row in zip(users, answer["result"])}
    spine = pa.table(
        {
            "user_id": users,
            "timestamp": pa.array([dt.datetime.now(dt.timezone.utc)] * len(users), pa.timestamp("us", tz="UTC")),
        }
    )
    with flight.FlightClient(FLIGHT) as client:
        command = {"training_set": {"workspace": served, "features": ["user_login_counts"]}}
        descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
        writer, reader = client.do_exchange(descriptor)
        writer.begin(spine.schema)
        writer.write_table(spine)
        writer.done_writing()
        offline = reader.read_all()
        writer.close()
    rows = {r["user_id"]: r for r in offline.to_pylist()}
    for user in users:
        row = rows[user]
        assert online[user] == [
            row["user_login_counts__user_login_count_7d"],
            row["user_login_counts__user_login_count_30d"],
        ], (user, online[user], row)


def test_a_new_apply_is_served_without_a_restart(served):
    """A feature service changed by an apply is served as changed within seconds."""
    service = """
[[feature_service]]
name = "changing"
features = [{features}]
"""
    files = [{"path": p.name, "content": p.read_text()} for p in sorted(REPO.glob("*.toml"))]
    files.append({"path": "extra.toml", "content": EXTRA})
    params = {"workspace_name": served, "feature_service_name": "changing",
              "join_key_map": {"user_id": "u3"}}
    with flight.FlightClient(FLIGHT) as client:
        one = service.format(features='"user_login_counts.user_login_count_7d"')
        action(client, "apply", {"workspace": served, "files": files + [{"path": "s.toml", "content": one}]})
        eventually(params, {"result": {"features": [30]}})
        two = service.format(features='"user_login_counts.user_login_count_7d", "user_login_counts.user_login_count_30d"')
        action(client, "apply", {"workspace": served, "files": files + [{"path": "s.toml", "content": two}]})
    deadline = time.time() + 10
    while True:
        status, answer = get_features(params)
        assert status == 200, answer
        if answer["result"]["features"] == [30, 30]:
            break
        assert answer["result"]["features"] == [30], answer
        assert time.time() < deadline, "the new definition was not served within 10 s"
        time.sleep(0.1)
