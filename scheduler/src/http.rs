//! The feature server's HTTP API: JSON over HTTP/1.1, shaped like Tecton's `get-features`
//! and `get-features-batch` (docs/serving.md).
//!
//! - `POST /v1/get-features` (also Tecton's path `/v1/feature-service/get-features`): one
//!   entity's feature vector;
//! - `POST /v1/get-features-batch` (and `/v1/feature-service/get-features-batch`): many
//!   entities' in one call;
//! - `GET /healthz` (and `/health`): `ok` while the process serves; `GET /readyz`: `ok` once
//!   it can answer (an `ftab-serving` process has its first copy of the definitions), else
//!   503.
//!
//! A body is the request object itself, or Tecton's `{"params": {...}}` around it; the
//! fields take DESIGN.md's names (`workspace`, `feature_service`) or Tecton's
//! (`workspace_name`, `feature_service_name`).
//!
//! A refusal is a 4xx with `{"error": {"code": N, "message": "..."}}` saying what is wrong;
//! a server fault is a 5xx in the same shape, never a partial answer.

use std::collections::BTreeMap;
use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ftab_model::definitions::FeatureRef;
use ftab_model::names::WorkspaceName;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::error::Error;
use crate::serving::{Answer, FeatureRequest, Serving};

/// The largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Which values to describe beside the values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataOptions {
    #[serde(default)]
    include_names: bool,
    #[serde(default)]
    include_data_types: bool,
    #[serde(default)]
    include_effective_times: bool,
    #[serde(default)]
    include_serving_status: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetFeatures {
    #[serde(alias = "workspace")]
    workspace_name: String,
    #[serde(default, alias = "feature_service")]
    feature_service_name: Option<String>,
    #[serde(default)]
    features: Option<Vec<String>>,
    join_key_map: BTreeMap<String, Value>,
    #[serde(default)]
    metadata_options: MetadataOptions,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entity {
    join_key_map: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetFeaturesBatch {
    #[serde(alias = "workspace")]
    workspace_name: String,
    #[serde(default, alias = "feature_service")]
    feature_service_name: Option<String>,
    #[serde(default)]
    features: Option<Vec<String>>,
    request_data: Vec<Entity>,
    #[serde(default)]
    metadata_options: MetadataOptions,
}

/// An error answered as JSON with its HTTP status.
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.0.as_u16(), "message": self.1}});
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        let status: tonic::Status = error.into();
        let code = match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError(code, status.message().to_string())
    }
}

fn bad_request(message: String) -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, message)
}

/// Parse a JSON body: the request object, or `{"params": {...}}` around it; saying what is
/// wrong with it.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, HttpError> {
    let invalid = |e: serde_json::Error| {
        bad_request(format!(
            "the request body is not a valid request: {e}; send {{\"workspace\": ..., \"feature_service\": ..., \"join_key_map\": {{...}}}} or Tecton's {{\"params\": {{...}}}} (docs/serving.md)"
        ))
    };
    let mut value: Value = serde_json::from_slice(body).map_err(invalid)?;
    if let Some(params) = value
        .as_object_mut()
        .and_then(|o| (o.len() == 1).then(|| o.remove("params")).flatten())
    {
        value = params;
    }
    serde_json::from_value(value).map_err(invalid)
}

fn workspace(name: &str) -> Result<WorkspaceName, HttpError> {
    WorkspaceName::new(name).map_err(|e| bad_request(format!("workspace_name: {e}")))
}

fn feature_refs(features: Option<Vec<String>>) -> Result<Option<Vec<FeatureRef>>, HttpError> {
    features
        .map(|list| {
            list.iter()
                .map(|f| {
                    f.parse::<FeatureRef>()
                        .map_err(|e| bad_request(format!("features: {e}")))
                })
                .collect()
        })
        .transpose()
}

/// The features' metadata asked for (names, data types).
fn feature_metadata(answer: &Answer, options: &MetadataOptions) -> Vec<Value> {
    answer
        .features
        .iter()
        .map(|f| {
            let mut m = serde_json::Map::new();
            if options.include_names {
                m.insert("name".into(), json!(f.name));
            }
            if options.include_data_types {
                m.insert("data_type".into(), json!({"type": f.data_type}));
            }
            Value::Object(m)
        })
        .collect()
}

async fn get_features(State(serving): State<Serving>, body: Bytes) -> Result<Response, HttpError> {
    let params: GetFeatures = parse(&body)?;
    let request = FeatureRequest {
        workspace: workspace(&params.workspace_name)?,
        feature_service: params.feature_service_name,
        features: feature_refs(params.features)?,
        entities: vec![params.join_key_map],
    };
    let mut answer = serving.get(request).await?;
    let options = &params.metadata_options;
    let vector = answer.vectors.swap_remove(0);
    let described = options.include_names
        || options.include_data_types
        || options.include_effective_times
        || options.include_serving_status;
    if !described {
        return Ok(json_response(
            json!({"result": {"features": Value::Array(vector.values)}}),
        ));
    }
    let mut metadata = feature_metadata(&answer, options);
    for (i, m) in metadata.iter_mut().enumerate() {
        if let Value::Object(m) = m {
            if options.include_effective_times {
                m.insert(
                    "effective_time".into(),
                    effective_time(vector.effective_times[i]),
                );
            }
            if options.include_serving_status {
                m.insert("status".into(), json!(vector.statuses[i]));
            }
        }
    }
    let mut body = json!({"result": {"features": Value::Array(vector.values)}});
    if metadata
        .iter()
        .any(|m| m.as_object().is_some_and(|o| !o.is_empty()))
    {
        body["metadata"] = json!({"features": metadata});
    }
    Ok(json_response(body))
}

async fn get_features_batch(
    State(serving): State<Serving>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let params: GetFeaturesBatch = parse(&body)?;
    let request = FeatureRequest {
        workspace: workspace(&params.workspace_name)?,
        feature_service: params.feature_service_name,
        features: feature_refs(params.features)?,
        entities: params
            .request_data
            .into_iter()
            .map(|e| e.join_key_map)
            .collect(),
    };
    let mut answer = serving.get(request).await?;
    let options = &params.metadata_options;
    let features = std::mem::take(&mut answer.vectors);
    let result: Vec<Value> = features
        .into_iter()
        .map(|vector| {
            let mut row = json!({"features": Value::Array(vector.values)});
            if options.include_serving_status {
                row["statuses"] = json!(vector.statuses);
            }
            if options.include_effective_times {
                row["effective_times"] = Value::Array(
                    vector
                        .effective_times
                        .iter()
                        .map(|t| effective_time(*t))
                        .collect(),
                );
            }
            row
        })
        .collect();
    let metadata = feature_metadata(&answer, options);
    let mut body = json!({"result": result});
    if metadata
        .iter()
        .any(|m| m.as_object().is_some_and(|o| !o.is_empty()))
    {
        body["metadata"] = json!({"features": metadata});
    }
    Ok(json_response(body))
}

fn json_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn not_found() -> HttpError {
    HttpError(
        StatusCode::NOT_FOUND,
        "no such endpoint; POST /v1/get-features or /v1/get-features-batch, GET /healthz or /readyz".into(),
    )
}

/// `ok` once requests can be answered (a serving process has its definitions), else 503.
async fn ready(State(serving): State<Serving>) -> Result<&'static str, HttpError> {
    serving.ready()?;
    Ok("ok")
}

/// An effective time as JSON: RFC 3339, or null where there is no record.
fn effective_time(micros: Option<i64>) -> Value {
    micros
        .map(|m| Value::String(ftab_engine::online::format_micros(m)))
        .unwrap_or(Value::Null)
}

/// The API's routes.
pub fn router(serving: Serving) -> Router {
    let ok = || async { "ok" };
    Router::new()
        .route("/v1/get-features", post(get_features))
        .route("/v1/get-features-batch", post(get_features_batch))
        .route("/v1/feature-service/get-features", post(get_features))
        .route(
            "/v1/feature-service/get-features-batch",
            post(get_features_batch),
        )
        .route("/healthz", get(ok))
        .route("/readyz", get(ready))
        .route("/health", get(ok))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(serving)
}

/// Serve the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // TCP_NODELAY, as for every service of ftab (a reply in two writes would wait for the
    // client's delayed ACK).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    axum::serve(listener, router(serving))
        .with_graceful_shutdown(shutdown)
        .await
}
