//! Commands, via `POST {toolbox}/process/execute`.
//!
//! Daytona's execute merges stdout and stderr into one `result`, and answers
//! a timeout with 408 and no output at all. The connector does better with
//! one request, and without starting a process of its own: it sends a small
//! shell script that runs the command with `eval` inside a command
//! substitution (one fork, no exec) that captures its stderr while stdout
//! flows on, then prints a per-call random marker and the captured stderr. The
//! marker splits `result` back into the two streams. Only when the daemon's
//! shell is not bash does the script re-run itself under bash (one exec), so
//! commands always get bash.
//!
//! A command with a timeout runs under coreutils `timeout` (so a timed out
//! command still returns what it printed, with exit code 124, and its whole
//! process group is killed); Daytona's own `timeout` (seconds, rounded up)
//! stays as a safety net a few seconds later.

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

/// Ends the captured stderr (see [`script`]); never quoted, so plain.
fn sentinel(nonce: &str) -> String {
    format!("FLUE_END_{nonce}")
}

/// The script sent to Daytona for `command`: shell builtins only, but for
/// `timeout` when a timeout is asked for.
pub fn script(command: &str, timeout_ms: Option<u64>, nonce: &str) -> String {
    let run = match timeout_ms {
        // `timeout` signals the command's whole process group; -k follows up with KILL.
        Some(ms) => format!(
            "if command -v timeout >/dev/null 2>&1; then timeout -k 2 {}.{:03} bash -c {q}; else eval {q}; fi",
            ms / 1000,
            ms % 1000,
            q = quote(command)
        ),
        None => format!("eval {}", quote(command)),
    };
    // The command's stdout goes straight on (fd 3); its stderr is captured by
    // the one subshell, the substitution. A substitution strips trailing
    // newlines, so an EXIT trap (which also runs after an `exit` in the
    // command) appends a sentinel that is taken off again. A command that
    // sets its own EXIT trap replaces ours: only its trailing newlines go.
    let body = format!(
        "exec 3>&1\n\
         __flue_err=$( exec 4>&1 2>&1 1>&3 3>&- </dev/null; trap 'printf %s {sentinel} >&4' EXIT; {run} 4>&- )\n\
         __flue_rc=$?\n\
         exec 3>&-\n\
         printf '\\n%s\\n' '{marker}'\n\
         printf '%s' \"${{__flue_err%{sentinel}}}\"\n\
         exit $__flue_rc\n",
        marker = marker(nonce),
        sentinel = sentinel(nonce),
    );
    format!("[ -z \"${{BASH_VERSION-}}\" ] && command -v bash >/dev/null 2>&1 && exec bash -c {}\n{body}", quote(&body))
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
        body["timeout"] = ms.div_ceil(1000).saturating_add(SAFETY_NET_SECS).into();
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
        call = call.timeout(ms.div_ceil(1000).saturating_add(2 * SAFETY_NET_SECS).saturating_mul(1000));
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
                timed_out: true,
            });
        }
        Err(err) => return Err(err),
    };
    let parsed: ExecuteResponse = api::json(&url, &response)?;
    let (stdout, mut stderr) = split(parsed.result.as_deref().unwrap_or(""), &nonce);
    let exit_code = parsed.exit_code.or(parsed.code).unwrap_or(-1);
    let timed_out = exit_code == 124 && options.timeout_ms.is_some();
    if let Some(ms) = options.timeout_ms.filter(|_| timed_out) {
        stderr.push_str(&format!("\n[flue: command timed out after {ms} ms and was killed]\n"));
    }
    Ok(ExecResult { stdout, stderr, exit_code, timed_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    /// Run `script` with `shell` and split its output as the connector does.
    fn run_with(shell: &str, command: &str, timeout_ms: Option<u64>) -> (String, String, i32) {
        let script = script(command, timeout_ms, "n0nce");
        let out = std::process::Command::new(shell).arg("-c").arg(&script).output().unwrap();
        let (stdout, stderr) = split(&String::from_utf8_lossy(&out.stdout), "n0nce");
        (stdout, stderr, out.status.code().unwrap_or(-1))
    }

    #[test]
    fn the_wrapper_keeps_streams_and_exit_codes_apart_in_bash_and_sh() {
        for shell in ["bash", "sh"] {
            let got = run_with(shell, "echo out; echo err >&2; printf 'no newline' >&2; exit 3", None);
            assert_eq!(got, ("out\n".into(), "err\nno newline".into(), 3), "{shell}");
            let got = run_with(shell, "printf 'a\\n\\n'; echo 'e\n' >&2", None);
            assert_eq!(got, ("a\n\n".into(), "e\n\n".into(), 0), "{shell}: trailing newlines");
            // Bash features work whatever the daemon's shell is.
            let got = run_with(shell, "x=([1]=b); echo \"${x[1]}\" ${BASH_VERSION:+bash}", None);
            assert_eq!(got.0, "b bash\n", "{shell}");
            let got = run_with(shell, "echo fine; )(", None);
            assert_eq!(got.2, 2, "{shell}: a syntax error is the command's, exit 2: {got:?}");
            let got = run_with(shell, "cat", None);
            assert_eq!(got, (String::new(), String::new(), 0), "{shell}: stdin is empty");
            // The command's own EXIT trap wins; its stderr is left whole.
            let got = run_with(shell, "trap 'echo bye' EXIT; printf 'endsx' >&2; exit 4", None);
            assert_eq!(got, ("bye\n".into(), "endsx".into(), 4), "{shell}: own EXIT trap");
            let got = run_with(shell, "echo e >&2; exec true", None);
            assert_eq!(got, (String::new(), "e".into(), 0), "{shell}: exec replaces the shell");
        }
    }

    #[test]
    fn without_a_timeout_the_wrapper_starts_no_program() {
        let script = script("true", None, "n");
        for program in ["mktemp", "cat ", "rm ", "timeout"] {
            assert!(!script.contains(program), "{program} in {script}");
        }
        let got = run_with("bash", "echo before; sleep 5; echo after", Some(300));
        assert_eq!((got.0.as_str(), got.2), ("before\n", 124), "{got:?}");
    }

    #[test]
    fn split_uses_the_last_marker() {
        let nonce = "abc";
        let result = format!("out\n--FLUE-STDERR-abc--\nerr\n");
        assert_eq!(split(&result, nonce), ("out".into(), "err\n".into()));
        assert_eq!(split("no marker", nonce), ("no marker".into(), String::new()));
    }
}
