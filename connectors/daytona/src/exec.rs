//! Commands, via `POST {toolbox}/process/execute`.
//!
//! Daytona's execute merges stdout and stderr into one `result`, and answers
//! a timeout with 408 and no output at all. The connector does better with
//! one request: it sends a small POSIX shell script that runs the command
//! with stderr to a temporary file and under coreutils `timeout` (so a timed
//! out command still returns what it printed, with exit code 124, and its
//! whole process group is killed), then prints a per-call random marker and
//! the captured stderr. The marker splits `result` back into the two streams.
//! Daytona's own `timeout` (seconds, rounded up) stays as a safety net a few
//! seconds later.

use std::hash::{BuildHasher, Hasher};

use crate::api::{self, ApiError, Call};
use crate::flue::sandbox::types::{ExecOptions, ExecResult, SandboxError};
use crate::model::ExecuteResponse;

/// Seconds Daytona's own timeout waits beyond the command's.
const SAFETY_NET_SECS: u64 = 5;

/// A random token; `RandomState` is seeded from WASI's random source.
pub fn nonce() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    format!("{:016x}", hasher.finish())
}

/// `'…'` quoting for POSIX shells.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn marker(nonce: &str) -> String {
    format!("--FLUE-STDERR-{nonce}--")
}

/// The script sent to Daytona for `command`.
pub fn script(command: &str, timeout_ms: Option<u64>, nonce: &str) -> String {
    let run = match timeout_ms {
        // `timeout` signals the command's whole process group; -k follows up with KILL.
        Some(ms) => format!(
            "if command -v timeout >/dev/null 2>&1; then timeout -k 2 {}.{:03} \"$__flue_sh\" -c {q}; else \"$__flue_sh\" -c {q}; fi",
            ms / 1000,
            ms % 1000,
            q = quote(command)
        ),
        None => format!("\"$__flue_sh\" -c {}", quote(command)),
    };
    format!(
        "__flue_sh=sh; command -v bash >/dev/null 2>&1 && __flue_sh=bash\n\
         __flue_err=$(mktemp 2>/dev/null || echo /tmp/.flue-stderr-{nonce})\n\
         {{ {run}; }} </dev/null 2>\"$__flue_err\"\n\
         __flue_rc=$?\n\
         printf '\\n%s\\n' '{marker}'\n\
         cat \"$__flue_err\" 2>/dev/null; rm -f \"$__flue_err\"\n\
         exit $__flue_rc\n",
        marker = marker(nonce)
    )
}

/// Split Daytona's merged `result` into stdout and stderr.
pub fn split(result: &str, nonce: &str) -> (String, String) {
    let marker = format!("\n{}\n", marker(nonce));
    match result.rfind(&marker) {
        Some(at) => (result[..at].to_string(), result[at + marker.len()..].to_string()),
        None => (result.to_string(), String::new()),
    }
}

pub fn run(toolbox: &str, command: &str, options: &ExecOptions) -> Result<ExecResult, ApiError> {
    let nonce = nonce();
    let mut body = serde_json::json!({ "command": script(command, options.timeout_ms, &nonce) });
    if let Some(ms) = options.timeout_ms {
        body["timeout"] = (ms.div_ceil(1000) + SAFETY_NET_SECS).into();
    }
    if let Some(cwd) = &options.cwd {
        body["cwd"] = cwd.clone().into();
    }
    if !options.env.is_empty() {
        body["envs"] = options
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let url = format!("{toolbox}/process/execute");
    // Never retried: a command is not idempotent.
    let mut call = Call::post_json(url.clone(), &body);
    if let Some(ms) = options.timeout_ms {
        call = call.timeout((ms.div_ceil(1000) + 2 * SAFETY_NET_SECS) * 1000);
    }
    let response = match api::send(&call) {
        Ok(response) => response,
        Err(ApiError::Unreachable(SandboxError::Timeout(_))) if options.timeout_ms.is_some() => {
            return Ok(ExecResult {
                stdout: String::new(),
                stderr: format!(
                    "[flue: command timed out after {} ms; Daytona stopped it and its output was lost]\n",
                    options.timeout_ms.unwrap_or_default()
                ),
                exit_code: 124,
            });
        }
        Err(err) => return Err(err),
    };
    let parsed: ExecuteResponse = api::json(&url, &response)?;
    let (stdout, mut stderr) = split(parsed.result.as_deref().unwrap_or(""), &nonce);
    let exit_code = parsed.exit_code.or(parsed.code).unwrap_or(-1);
    if exit_code == 124
        && let Some(ms) = options.timeout_ms
    {
        stderr.push_str(&format!("\n[flue: command timed out after {ms} ms and was killed]\n"));
    }
    Ok(ExecResult { stdout, stderr, exit_code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn split_uses_the_last_marker() {
        let nonce = "abc";
        let result = format!("out\n--FLUE-STDERR-abc--\nerr\n");
        assert_eq!(split(&result, nonce), ("out".into(), "err\n".into()));
        assert_eq!(split("no marker", nonce), ("no marker".into(), String::new()));
    }
}
