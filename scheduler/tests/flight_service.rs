//! The Flight service in-process on a free loopback port, spoken to with arrow-flight's
//! generic client and raw JSON, as any Flight client would.

mod common;

use arrow_flight::FlightDescriptor;
use common::{raw_action, start};
use futures::TryStreamExt;

#[tokio::test]
async fn raw_json_actions_and_status_codes() {
    let mut running = start().await;
    let client = &mut running.client;

    let created = raw_action(
        client,
        "create_workspace",
        r#"{"name": "prod", "kind": "live"}"#,
    )
    .await
    .unwrap();
    assert_eq!(created["kind"], "live");
    let status = raw_action(client, "create_workspace", r#"{"name": "prod"}"#)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);

    // A 100 KB name is refused as invalid, with a message that does not echo it whole
    // (it made the reply exceed gRPC's metadata limit: RESOURCE_EXHAUSTED).
    let long = serde_json::json!({"name": "a".repeat(100_000), "kind": "live"}).to_string();
    let status = raw_action(client, "create_workspace", &long)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("(100000 characters)") && status.message().len() < 1_000,
        "{}",
        &status.message()[..status.message().len().min(300)]
    );

    let status = raw_action(client, "drop_tables", "{}").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("unknown action `drop_tables`; this server knows: plan, apply"),
        "{}",
        status.message()
    );

    let status = raw_action(client, "plan", r#"{"workspace": "prod"}"#)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("missing field `files`"),
        "{}",
        status.message()
    );

    let status = raw_action(
        client,
        "describe_table",
        r#"{"workspace": "prod", "table": "t"}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let listed = raw_action(client, "list_workspaces", "").await.unwrap();
    assert_eq!(listed["workspaces"][0]["name"], "prod");

    let actions: Vec<_> = client
        .list_actions()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(actions.len(), ftab_model::protocol::ACTION_TYPES.len());

    assert_eq!(client.handshake("hello").await.unwrap(), "hello");

    // GetFlightInfo takes only training-set commands, and says so.
    let status = client
        .get_flight_info(FlightDescriptor::new_cmd(
            br#"{"spine": {"name": "s"}}"#.to_vec(),
        ))
        .await
        .unwrap_err();
    assert!(
        status
            .to_string()
            .contains("GetFlightInfo takes a `training_set` command, not `spine`"),
        "{status}"
    );
    // A ticket this server did not make.
    let status = client
        .do_get(arrow_flight::Ticket::new(b"garbage".to_vec()))
        .await
        .expect_err("a bad ticket is refused");
    assert!(
        status.to_string().contains("not a ticket from this server"),
        "{status}"
    );

    // A DoPut whose command is not an ftab command is refused with an example.
    let batch = datafusion::arrow::array::RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![1])) as _,
    )])
    .unwrap();
    let put = common::put(client, serde_json::json!({"upload": {}}), vec![batch])
        .await
        .unwrap_err();
    assert_eq!(put.code(), tonic::Code::InvalidArgument);
    assert!(
        put.message().contains("a command is JSON with one key"),
        "{}",
        put.message()
    );

    // Graceful shutdown ends the server task without error.
    running.stop.take().unwrap().send(()).unwrap();
    running.server.await.unwrap().unwrap();
}
