//! A small client of the feature server's HTTP API (docs/serving.md).

use crate::error::CliError;

/// POST a JSON body; the JSON answer, or the server's error message as it gave it.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<serde_json::Value, CliError> {
    let unreachable = |e: &dyn std::fmt::Display| CliError::Http {
        url: url.to_string(),
        message: format!(
            "cannot reach the feature server ({e}); it is the scheduler's HTTP address (`ftab-scheduler` prints it as http=...): pass --http URL or set FTAB_HTTP"
        ),
    };
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| unreachable(&e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|_| CliError::Http {
        url: url.to_string(),
        message: format!(
            "answered {status} with something other than JSON: {}",
            text.chars().take(200).collect::<String>()
        ),
    })?;
    if !status.is_success() {
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("no error message")
            .to_string();
        return Err(CliError::Served {
            status: status.as_u16(),
            message,
        });
    }
    Ok(value)
}
