//! `bash`: one command in the session's cwd, with a bounded timeout; the
//! output's last [`MAX_RESULT_BYTES`](crate::model::caps::MAX_RESULT_BYTES).

use std::time::Duration;

use super::{Args, Outcome, error, tail};
use crate::model::caps::MAX_BASH_TIMEOUT;
use crate::sandbox::session::{ExecOptions, Session};

/// Default `bash` timeout.
const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);

/// The `bash` tool.
pub async fn bash(session: &Session, args: Args<'_>) -> Outcome {
    let Some(command) = args.text("command") else { return args.missing("command") };
    let timeout = args
        .number("timeout")
        .map_or(DEFAULT_BASH_TIMEOUT, |secs| Duration::from_secs(secs as u64).min(MAX_BASH_TIMEOUT));
    let options = ExecOptions { cwd: None, env: Vec::new(), timeout: Some(timeout) };
    match session.exec(command, options).await {
        Ok(out) => {
            let mut text = out.stdout;
            if !out.stderr.is_empty() {
                text.push_str(&out.stderr);
            }
            text.push_str(&format!("\n[exit code {}]", out.exit_code));
            Outcome { content: tail(&text), is_error: out.exit_code != 0 }
        }
        Err(err) => error(err.to_string()),
    }
}
