//! The tools the model works with, with Flue's names and parameters:
//! `read`, `write`, `edit`, `bash`, `grep`, `glob`. They act on the agent's
//! session (its sandbox and cwd), so they work on every connector. A tool's
//! failure goes back to the model as an error result; large outputs are
//! capped before they reach it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::sandbox::session::{ExecOptions, Session};

/// The most a tool result carries to the model.
pub const MAX_RESULT_BYTES: usize = 50 * 1024;
/// The most lines `read` returns at once.
const MAX_READ_LINES: usize = 2000;
/// Default `bash` timeout.
const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);

/// Every tool's name.
pub const ALL: [&str; 6] = ["read", "write", "edit", "bash", "grep", "glob"];

/// The definitions of `names`, as `{name, description, parameters}`.
pub fn definitions(names: &[String]) -> Vec<Value> {
    names.iter().filter_map(|name| definition(name)).collect()
}

fn definition(name: &str) -> Option<Value> {
    let (description, properties, required): (&str, Value, &[&str]) = match name {
        "read" => (
            "Read a text file. Lines are numbered from 1; page through long files with offset and limit.",
            json!({"path": {"type": "string", "description": "File path, relative to the working directory"},
                   "offset": {"type": "integer", "description": "First line to read (1-indexed)"},
                   "limit": {"type": "integer", "description": "How many lines to read"}}),
            &["path"],
        ),
        "write" => (
            "Create or overwrite a file with the given content; parent directories are created.",
            json!({"path": {"type": "string"}, "content": {"type": "string"}}),
            &["path", "content"],
        ),
        "edit" => (
            "Replace exact text in a file. oldText must occur exactly once unless replaceAll is true.",
            json!({"path": {"type": "string"}, "oldText": {"type": "string"}, "newText": {"type": "string"},
                   "replaceAll": {"type": "boolean"}}),
            &["path", "oldText", "newText"],
        ),
        "bash" => (
            "Run a shell command (bash) in the working directory. Output is the command's stdout and stderr.",
            json!({"command": {"type": "string"},
                   "timeout": {"type": "integer", "description": "Seconds before the command is killed (exit 124)"}}),
            &["command"],
        ),
        "grep" => (
            "Search file contents for a regular expression (or a literal string) under a path.",
            json!({"pattern": {"type": "string"}, "path": {"type": "string", "description": "Default: ."},
                   "include": {"type": "string", "description": "Only files matching this glob, e.g. *.rs"},
                   "literal": {"type": "boolean"}}),
            &["pattern"],
        ),
        "glob" => (
            "List files matching a glob pattern (e.g. **/*.ts) under a path.",
            json!({"pattern": {"type": "string"}, "path": {"type": "string", "description": "Default: ."}}),
            &["pattern"],
        ),
        _ => return None,
    };
    Some(json!({
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }))
}

/// A tool's result for the model.
pub struct Outcome {
    /// What the model reads.
    pub content: String,
    /// Whether the tool failed.
    pub is_error: bool,
}

fn ok(content: String) -> Outcome {
    Outcome { content, is_error: false }
}

fn error(content: impl Into<String>) -> Outcome {
    Outcome { content: content.into(), is_error: true }
}

/// Single-quote `text` for bash.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Keep the last `MAX_RESULT_BYTES` of `text`, saying what was cut.
fn tail(text: &str) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text.to_string();
    }
    let mut start = text.len() - MAX_RESULT_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[output truncated: the first {start} bytes were dropped]\n{}", &text[start..])
}

/// Keep the first `MAX_RESULT_BYTES` of `text`, saying what was cut.
fn head(text: &str, what: &str) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text.to_string();
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[{what} truncated at {MAX_RESULT_BYTES} bytes: narrow the search]", &text[..end])
}

/// Run tool `name` with `input` on `session`.
pub async fn call(session: &Session, name: &str, input: &Value) -> Outcome {
    let text = |key: &str| input.get(key).and_then(Value::as_str);
    let number = |key: &str| input.get(key).and_then(Value::as_u64);
    let missing = |key: &str| error(format!("{name}: the parameter {key} is required"));
    match name {
        "read" => {
            let Some(path) = text("path") else { return missing("path") };
            let content = match session.read_text(path).await {
                Ok(content) => content,
                Err(err) => return error(err.to_string()),
            };
            let lines: Vec<&str> = content.lines().collect();
            let offset = number("offset").unwrap_or(1).max(1) as usize;
            let limit = number("limit").map_or(MAX_READ_LINES, |l| (l as usize).min(MAX_READ_LINES));
            let mut out = String::new();
            let mut shown = 0;
            for (i, line) in lines.iter().enumerate().skip(offset - 1).take(limit) {
                if out.len() + line.len() > MAX_RESULT_BYTES {
                    break;
                }
                out.push_str(&format!("{:>6}\t{line}\n", i + 1));
                shown += 1;
            }
            let last = offset - 1 + shown;
            if last < lines.len() {
                out.push_str(&format!(
                    "[{} of {} lines shown (lines {offset}-{last}); read on with offset={}]\n",
                    shown,
                    lines.len(),
                    last + 1
                ));
            }
            if lines.is_empty() {
                out.push_str("[the file is empty]\n");
            }
            ok(out)
        }
        "write" => {
            let (Some(path), Some(content)) = (text("path"), text("content")) else {
                return missing("path and content");
            };
            match session.write_file(path, content.as_bytes()).await {
                Ok(()) => ok(format!("wrote {} bytes to {path}", content.len())),
                Err(err) => error(err.to_string()),
            }
        }
        "edit" => {
            let (Some(path), Some(old), Some(new)) = (text("path"), text("oldText"), text("newText")) else {
                return missing("path, oldText and newText");
            };
            let replace_all = input.get("replaceAll").and_then(Value::as_bool).unwrap_or(false);
            let content = match session.read_text(path).await {
                Ok(content) => content,
                Err(err) => return error(err.to_string()),
            };
            if old.is_empty() {
                return error("edit: oldText is empty");
            }
            let count = content.matches(old).count();
            let edited = match (count, replace_all) {
                (0, _) => return error(format!("edit: oldText was not found in {path}")),
                (1, _) | (_, true) => content.replace(old, new),
                (n, false) => {
                    return error(format!(
                        "edit: oldText occurs {n} times in {path}: give more context, or set replaceAll"
                    ));
                }
            };
            match session.write_file(path, edited.as_bytes()).await {
                Ok(()) => ok(format!("replaced {count} occurrence(s) in {path}")),
                Err(err) => error(err.to_string()),
            }
        }
        "bash" => {
            let Some(command) = text("command") else { return missing("command") };
            let timeout = number("timeout").map(Duration::from_secs).unwrap_or(DEFAULT_BASH_TIMEOUT);
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
        "grep" => {
            let Some(pattern) = text("pattern") else { return missing("pattern") };
            let path = text("path").unwrap_or(".");
            let mut command = String::from("grep -rnI --color=never");
            command.push_str(if input.get("literal").and_then(Value::as_bool).unwrap_or(false) {
                " -F"
            } else {
                " -E"
            });
            if let Some(include) = text("include") {
                command.push_str(&format!(" --include={}", quote(include)));
            }
            command.push_str(&format!(" -e {} -- {} | head -c {}", quote(pattern), quote(path), MAX_RESULT_BYTES + 1));
            run_listing(session, &command, "grep").await
        }
        "glob" => {
            let Some(pattern) = text("pattern") else { return missing("pattern") };
            let path = text("path").unwrap_or(".");
            let command = format!(
                "cd {} && shopt -s globstar nullglob extglob && for f in {pattern}; do printf '%s\\n' \"$f\"; done | head -c {}",
                quote(path),
                MAX_RESULT_BYTES + 1
            );
            run_listing(session, &command, "glob").await
        }
        other => error(format!("there is no tool {other:?}: use one of {}", ALL.join(", "))),
    }
}

async fn run_listing(session: &Session, command: &str, what: &str) -> Outcome {
    let options = ExecOptions { cwd: None, env: Vec::new(), timeout: Some(Duration::from_secs(60)) };
    match session.exec(command, options).await {
        // grep exits 1 for "no match": not an error.
        Ok(out) if out.exit_code == 0 || (out.exit_code == 1 && out.stderr.is_empty()) => {
            if out.stdout.is_empty() {
                ok(format!("[{what}: no matches]"))
            } else {
                ok(head(&out.stdout, what))
            }
        }
        Ok(out) => error(format!("{what} failed (exit {}): {}", out.exit_code, out.stderr.trim())),
        Err(err) => error(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_outputs_keep_the_useful_end() {
        let long = "x".repeat(MAX_RESULT_BYTES * 2) + "END";
        let kept = tail(&long);
        assert!(kept.ends_with("END") && kept.starts_with("[output truncated"));
        assert!(head(&long, "grep").contains("grep truncated"));
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(definitions(&ALL.map(String::from)).len(), 6);
        assert!(definition("task").is_none());
    }
}
