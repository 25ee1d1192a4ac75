"""ftab's Flight protocol driven by pyarrow alone, with no ftab code: the JSON commands and
answers documented in docs/protocol.md are all a client needs.

Run by tests/python_client.rs against a real ftab-scheduler; FTAB_FLIGHT_URL names it and
FTAB_EXAMPLE_REPO the example feature repository.
"""

import json
import os
import pathlib
import uuid

import pyarrow as pa
import pyarrow.flight as flight
import pytest

URL = os.environ["FTAB_FLIGHT_URL"]
REPO = pathlib.Path(os.environ["FTAB_EXAMPLE_REPO"])


@pytest.fixture
def client():
    with flight.FlightClient(URL) as c:
        yield c


@pytest.fixture
def workspace(client):
    name = "py_" + uuid.uuid4().hex[:8]
    action(client, "create_workspace", {"name": name, "kind": "live"})
    return name


def action(client, name, body=None):
    payload = json.dumps(body if body is not None else {}).encode()
    results = list(client.do_action(flight.Action(name, payload)))
    assert len(results) == 1, f"{name} answered {len(results)} results"
    return json.loads(results[0].body.to_pybytes())


def repo_files():
    return [
        {"path": p.relative_to(REPO).as_posix(), "content": p.read_text()}
        for p in sorted(REPO.rglob("*.toml"))
    ]


def test_list_actions_names_the_protocol(client):
    names = {a.type for a in client.list_actions()}
    assert {"plan", "apply", "create_workspace", "list_workspaces", "describe_table"} <= names


def test_plan_apply_describe(client, workspace):
    plan = action(client, "plan", {"workspace": workspace, "files": repo_files()})
    assert plan["current_version"] == 0
    assert plan["kind"] == "live"
    changes = {(c["object"], c["name"], c["kind"]) for c in plan["plan"]["changes"]}
    assert ("feature_table", "user_login_counts", "create") in changes
    assert ("feature_service", "fraud_detection", "create") in changes

    applied = action(
        client,
        "apply",
        {"workspace": workspace, "files": repo_files(), "expected_version": 0},
    )
    assert (applied["previous_version"], applied["version"]) == (0, 1)

    described = action(
        client, "describe_table", {"workspace": workspace, "table": "user_merchant_stats"}
    )
    assert described["join_keys"] == ["user_id", "merchant_id"]
    assert described["table"]["ttl"] == "90d"
    assert [f["name"] for f in described["features"]] == [
        "transaction_count_7d",
        "amount_mean_7d",
        "amount_max_7d",
    ]

    listed = action(client, "list_workspaces")
    mine = [w for w in listed["workspaces"] if w["name"] == workspace]
    assert mine and mine[0]["version"] == 1 and mine[0]["feature_tables"] == 2


def test_list_flights_gives_arrow_schemas(client, workspace):
    action(client, "apply", {"workspace": workspace, "files": repo_files()})
    infos = list(client.list_flights(json.dumps({"workspace": workspace}).encode()))
    by_table = {info.descriptor.path[1].decode(): info for info in infos}
    assert sorted(by_table) == ["user_login_counts", "user_merchant_stats"]

    info = by_table["user_login_counts"]
    assert [p.decode() for p in info.descriptor.path] == [workspace, "user_login_counts"]
    schema = info.schema
    assert schema.field("user_id").type == pa.string()
    assert not schema.field("user_id").nullable
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("user_login_count_7d").type == pa.int64()
    assert schema.field("user_login_count_7d").nullable
    listing = json.loads(info.app_metadata)
    assert listing["entities"] == ["user"] and listing["ttl"] == "30d"

    # A bare workspace name works as criteria too.
    assert len(list(client.list_flights(workspace.encode()))) == 2


def test_errors_have_the_right_codes_and_say_what_to_do(client, workspace):
    with pytest.raises(pa.ArrowInvalid, match="unknown action `frobnicate`"):
        action(client, "frobnicate")
    with pytest.raises(pa.ArrowInvalid, match="not a valid workspace name"):
        action(client, "create_workspace", {"name": "../etc"})
    with pytest.raises(KeyError, match="ftab workspace create nowhere"):
        action(client, "describe_table", {"workspace": "nowhere", "table": "t"})

    action(client, "apply", {"workspace": workspace, "files": repo_files()})
    narrowed = [
        {**f, "content": f["content"].replace('"amount_max_7d", type = "float64"', '"amount_max_7d", type = "float32"')}
        for f in repo_files()
    ]
    # FAILED_PRECONDITION
    with pytest.raises(pa.ArrowInvalid, match="precondition failed.*would break stored data"):
        action(client, "apply", {"workspace": workspace, "files": narrowed})
    # ABORTED: the plan was made against an older version
    with pytest.raises(pa.ArrowException, match="made against version 0; run `ftab plan` again"):
        action(client, "apply", {"workspace": workspace, "files": narrowed, "force": True, "expected_version": 0})
    forced = action(client, "apply", {"workspace": workspace, "files": narrowed, "force": True})
    assert forced["retired_storage"] == ["user_merchant_stats"]
