//! The Flight service in-process on a free loopback port, spoken to with arrow-flight's
//! generic client and raw JSON, as any Flight client would.

use arrow_flight::{Action, FlightClient, FlightDescriptor, PutResult};
use ftab_scheduler::{Scheduler, SchedulerConfig};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;

struct Running {
    client: FlightClient,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<ftab_scheduler::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = SchedulerConfig {
        data_dir: dir.path().join("data"),
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::open(config).await.unwrap();
    let listener = scheduler.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(scheduler.serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        client: FlightClient::new(channel),
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

async fn raw_action(
    client: &mut FlightClient,
    name: &str,
    body: &str,
) -> Result<serde_json::Value, tonic::Status> {
    let results: Vec<bytes::Bytes> =
        match client.do_action(Action::new(name, body.to_string())).await {
            Ok(stream) => stream.try_collect().await,
            Err(e) => Err(e),
        }
        .map_err(|e| match e {
            arrow_flight::error::FlightError::Tonic(status) => *status,
            other => panic!("unexpected error {other}"),
        })?;
    assert_eq!(results.len(), 1);
    Ok(serde_json::from_slice(&results[0]).unwrap())
}

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
    assert_eq!(actions.len(), ftab_core::protocol::ACTION_TYPES.len());

    assert_eq!(client.handshake("hello").await.unwrap(), "hello");

    // Calls of later capabilities say so rather than pretending.
    let put = client
        .do_put(futures::stream::iter([Ok(arrow_flight::FlightData::new()
            .with_descriptor(FlightDescriptor::new_cmd(b"{}".to_vec())))]))
        .await;
    let status = match put {
        Ok(mut stream) => match stream.next().await {
            Some(Err(arrow_flight::error::FlightError::Tonic(status))) => *status,
            other => panic!("expected an error, got {other:?}"),
        },
        Err(arrow_flight::error::FlightError::Tonic(status)) => *status,
        Err(other) => panic!("unexpected error {other}"),
    };
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let _: Option<PutResult> = None;

    // Graceful shutdown ends the server task without error.
    running.stop.take().unwrap().send(()).unwrap();
    running.server.await.unwrap().unwrap();
}
