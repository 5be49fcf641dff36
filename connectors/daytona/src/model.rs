//! The parts of Daytona's JSON the connector reads (field names as in
//! Daytona's OpenAPI documents). Unknown fields are ignored.

use serde::Deserialize;

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDto {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error_reason: Option<String>,
    #[serde(default)]
    pub toolbox_proxy_url: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum SandboxList {
    Paged {
        items: Vec<SandboxDto>,
        #[serde(rename = "nextCursor", default)]
        next_cursor: Option<String>,
    },
    Plain(Vec<SandboxDto>),
}

#[derive(Deserialize)]
pub struct UrlResponse {
    pub url: String,
}

#[derive(Deserialize)]
pub struct DirResponse {
    pub dir: String,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub name: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default)]
    pub size: Option<u64>,
    /// Octal, e.g. `0644`.
    #[serde(default)]
    pub permissions: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub modified_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub result: Option<String>,
}

/// Daytona's error bodies (API and daemon share the important fields).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}
