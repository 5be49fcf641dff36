//! The tools the model works with, with Flue's names and parameters:
//! `read`, `write`, `edit`, `bash`, `grep`, `glob`. They act on the agent's
//! session (its sandbox and cwd), so they work on every connector. A tool's
//! failure goes back to the model as an error result.
//!
//! Every tool is bounded ([`super::caps`]): a result carries at most
//! [`MAX_RESULT_BYTES`]; `read` reads a file in parts and never holds it
//! whole; `edit` works on files up to [`MAX_TOOL_FILE`] and refuses, before
//! building it, a result larger than that; `write` writes at most that.
//! No text from the model is pasted into a shell line: `grep` and `glob`
//! hand it to a fixed script as environment variables, so narrowing the
//! tools to `read`, `grep` and `glob` really means no command runs.

use std::time::Duration;

use serde_json::{Value, json};

use super::caps::{MAX_BASH_TIMEOUT, MAX_GLOB_PATTERNS, MAX_RESULT_BYTES, MAX_TOOL_FILE};
use crate::sandbox::error::ErrorKind;
use crate::sandbox::session::{ExecOptions, Session, format_bytes};

/// The most lines `read` returns at once.
const MAX_READ_LINES: usize = 2000;
/// Default `bash` timeout.
const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);
/// What `read` asks the sandbox for at a time.
const READ_PART: usize = 256 * 1024;

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
    // Any number the model sends, bounded by the platform's.
    let number = |key: &str| input.get(key).and_then(Value::as_u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let missing = |key: &str| error(format!("{name}: the parameter {key} is required"));
    match name {
        "read" => {
            let Some(path) = text("path") else { return missing("path") };
            let offset = number("offset").unwrap_or(1).max(1);
            let limit = number("limit").map_or(MAX_READ_LINES, |l| l.clamp(1, MAX_READ_LINES));
            read(session, path, offset, limit).await
        }
        "write" => {
            let (Some(path), Some(content)) = (text("path"), text("content")) else {
                return missing("path and content");
            };
            if content.len() > MAX_TOOL_FILE {
                return error(format!(
                    "write: {} of content is over the {} a tool may write: write the file in parts with bash",
                    format_bytes(content.len()),
                    format_bytes(MAX_TOOL_FILE)
                ));
            }
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
            if old.is_empty() {
                return error("edit: oldText is empty");
            }
            // The session reads at most MAX_TOOL_FILE.
            let content = match session.read_text(path).await {
                Ok(content) => content,
                Err(err) if err.kind == ErrorKind::TooLarge => {
                    return error(format!(
                        "edit: {path} is larger than the {} edit works on: change it with bash (e.g. sed)",
                        format_bytes(MAX_TOOL_FILE)
                    ));
                }
                Err(err) => return error(err.to_string()),
            };
            let count = content.matches(old).count();
            match (count, replace_all) {
                (0, _) => return error(format!("edit: oldText was not found in {path}")),
                (1, _) | (_, true) => {}
                (n, false) => {
                    return error(format!(
                        "edit: oldText occurs {n} times in {path}: give more context, or set replaceAll"
                    ));
                }
            }
            // The size of the result, before it is built.
            let size = (content.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()));
            if size > MAX_TOOL_FILE {
                return error(format!(
                    "edit: replacing {count} occurrence(s) would make {path} {}, over the {} a tool may write",
                    format_bytes(size),
                    format_bytes(MAX_TOOL_FILE)
                ));
            }
            let edited = content.replace(old, new);
            match session.write_file(path, edited.as_bytes()).await {
                Ok(()) => ok(format!("replaced {count} occurrence(s) in {path}")),
                Err(err) => error(err.to_string()),
            }
        }
        "bash" => {
            let Some(command) = text("command") else { return missing("command") };
            let timeout = number("timeout")
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
        "grep" => {
            let Some(pattern) = text("pattern") else { return missing("pattern") };
            let literal = input.get("literal").and_then(Value::as_bool).unwrap_or(false);
            let mut env = vec![
                ("FLUE_GREP_PATTERN".to_string(), pattern.to_string()),
                ("FLUE_GREP_PATH".to_string(), text("path").unwrap_or(".").to_string()),
            ];
            if let Some(include) = text("include") {
                env.push(("FLUE_GREP_INCLUDE".to_string(), include.to_string()));
            }
            // Fixed text only: the model's reaches grep as whole arguments.
            let command = format!(
                "grep -rnI --color=never {} ${{FLUE_GREP_INCLUDE:+\"--include=$FLUE_GREP_INCLUDE\"}} \
                 -e \"$FLUE_GREP_PATTERN\" -- \"$FLUE_GREP_PATH\" | head -c {}",
                if literal { "-F" } else { "-E" },
                MAX_RESULT_BYTES + 1
            );
            run_listing(session, &command, env, "grep").await
        }
        "glob" => {
            let Some(pattern) = text("pattern") else { return missing("pattern") };
            if pattern.contains('\n') {
                return error("glob: the pattern contains a line break");
            }
            let patterns = match expand_braces(pattern) {
                Ok(patterns) => patterns,
                Err(err) => return error(format!("glob: {err}")),
            };
            let env = vec![
                ("FLUE_GLOB_PATTERNS".to_string(), patterns.join("\n")),
                ("FLUE_GLOB_PATH".to_string(), text("path").unwrap_or(".").to_string()),
            ];
            // An unquoted expansion with IFS a newline is split into the
            // patterns and each is matched against file names: pathname
            // expansion only, never a command substitution.
            let command = format!(
                "cd -- \"$FLUE_GLOB_PATH\" || exit 2\n\
                 shopt -s globstar nullglob extglob\n\
                 IFS=$'\\n'\n\
                 for f in $FLUE_GLOB_PATTERNS; do printf '%s\\n' \"$f\"; done | head -c {}",
                MAX_RESULT_BYTES + 1
            );
            run_listing(session, &command, env, "glob").await
        }
        other => error(format!("there is no tool {other:?}: use one of {}", ALL.join(", "))),
    }
}

/// `read`: lines `offset`.. of a text file, at most `limit` lines and
/// [`MAX_RESULT_BYTES`], read in parts: neither the file nor one long line
/// is ever held whole.
async fn read(session: &Session, path: &str, offset: usize, limit: usize) -> Outcome {
    let mut reader = match session.open_read(path, 0).await {
        Ok(reader) => reader,
        Err(err) => return error(err.to_string()),
    };
    let mut page = Page { path, offset, limit, out: String::new(), shown: 0, full: false, left_out: false };
    // The line being read: its first bytes (only for lines shown) and its length.
    let (mut line, mut line_len, mut number) = (Vec::new(), 0usize, 0usize);
    loop {
        let part = match reader.read(READ_PART).await {
            Ok(part) => part,
            Err(err) => return error(err.to_string()),
        };
        if part.is_empty() {
            break;
        }
        let mut rest = part.as_slice();
        while !rest.is_empty() {
            let (piece, newline) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            rest = &rest[piece.len() + usize::from(newline)..];
            if number + 1 >= offset {
                let room = (MAX_RESULT_BYTES + 1).saturating_sub(line.len());
                line.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            line_len += piece.len();
            if !newline {
                continue;
            }
            number += 1;
            if number >= offset
                && let Err(outcome) = page.show(number, &line, line_len)
            {
                return outcome;
            }
            line.clear();
            line_len = 0;
            if page.full {
                // Whether anything follows what was shown.
                let more = !rest.is_empty() || reader.read(1).await.is_ok_and(|p| !p.is_empty());
                return ok(page.finish(number, more));
            }
        }
    }
    // A last line without a newline.
    if line_len > 0 {
        number += 1;
        if number >= offset
            && let Err(outcome) = page.show(number, &line, line_len)
        {
            return outcome;
        }
    }
    ok(page.finish(number, false))
}

/// What `read` returns, line by line.
struct Page<'a> {
    path: &'a str,
    offset: usize,
    limit: usize,
    out: String,
    shown: usize,
    /// No more lines fit (or `limit` were shown).
    full: bool,
    /// A line did not fit.
    left_out: bool,
}

impl Page<'_> {
    /// Show line `number` (its first bytes `start` of `len`), if it fits;
    /// an error outcome when it is not text.
    fn show(&mut self, number: usize, start: &[u8], len: usize) -> Result<(), Outcome> {
        if self.full {
            return Ok(());
        }
        let mut text = match std::str::from_utf8(start) {
            Ok(text) => text,
            // Cut inside a character: keep the whole ones.
            Err(err) if err.error_len().is_none() && len > start.len() => {
                std::str::from_utf8(&start[..err.valid_up_to()]).unwrap_or_default()
            }
            Err(_) => {
                return Err(error(format!(
                    "read: {} is not UTF-8 text (line {number}): inspect it with bash (e.g. file, xxd)",
                    self.path
                )));
            }
        };
        if len == text.len() {
            text = text.strip_suffix('\r').unwrap_or(text);
        }
        let prefix = format!("{number:>6}\t");
        let room = MAX_RESULT_BYTES.saturating_sub(self.out.len() + prefix.len() + 1);
        if text.len() > room {
            if self.shown > 0 {
                // The next read starts with this line.
                (self.full, self.left_out) = (true, true);
                return Ok(());
            }
            // A line longer than a whole result: its start, and a note.
            let note_room = room.saturating_sub(64);
            let mut end = note_room.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = &text[..end];
        }
        self.out.push_str(&prefix);
        self.out.push_str(text);
        if text.len() < len {
            self.out.push_str(&format!(" [line cut: {} more bytes]", len - text.len()));
        }
        self.out.push('\n');
        self.shown += 1;
        self.full = self.shown >= self.limit;
        Ok(())
    }

    /// The result, with a note on how to read on when `more` follows.
    fn finish(mut self, lines_seen: usize, more: bool) -> String {
        let last = self.offset + self.shown - 1;
        if more || self.left_out {
            self.out.push_str(&format!(
                "[lines {}-{last} shown; the file goes on: read on with offset={}]\n",
                self.offset,
                last + 1
            ));
        } else if lines_seen == 0 {
            self.out.push_str("[the file is empty]\n");
        } else if self.shown == 0 {
            self.out.push_str(&format!("[the file has {lines_seen} lines: offset {} is past its end]\n", self.offset));
        }
        self.out
    }
}

/// `pattern` with its brace alternatives expanded, as bash would before
/// matching (`**/*.{ts,tsx}` is two patterns), in bash's order; at most
/// [`MAX_GLOB_PATTERNS`].
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let mut patterns = vec![pattern.to_string()];
    loop {
        let mut expanded = false;
        let mut next = Vec::new();
        for pattern in patterns {
            match brace_group(&pattern) {
                Some((open, close, alternatives)) => {
                    expanded = true;
                    for alternative in alternatives {
                        next.push(format!("{}{alternative}{}", &pattern[..open], &pattern[close + 1..]));
                    }
                }
                None => next.push(pattern),
            }
            if next.len() > MAX_GLOB_PATTERNS {
                return Err(format!("the pattern's braces make more than {MAX_GLOB_PATTERNS} patterns: narrow it"));
            }
        }
        patterns = next;
        if !expanded {
            return Ok(patterns);
        }
    }
}

/// The first `{…,…}` of `pattern` (not escaped, with a comma at its top
/// level): where it opens and closes, and its alternatives.
fn brace_group(pattern: &str) -> Option<(usize, usize, Vec<&str>)> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => {
                let (mut depth, mut j, mut commas) = (0usize, i + 1, Vec::new());
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' => j += 1,
                        b'{' => depth += 1,
                        b'}' if depth == 0 => break,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                if j < bytes.len() && !commas.is_empty() {
                    let bounds: Vec<usize> = std::iter::once(i).chain(commas).chain(std::iter::once(j)).collect();
                    let alternatives = bounds.windows(2).map(|w| &pattern[w[0] + 1..w[1]]).collect();
                    return Some((i, j, alternatives));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Run a listing script with the model's text in `env`.
async fn run_listing(session: &Session, command: &str, env: Vec<(String, String)>, what: &str) -> Outcome {
    if env.iter().any(|(_, value)| value.contains('\0')) {
        return error(format!("{what}: a parameter contains a NUL byte"));
    }
    let options = ExecOptions { cwd: None, env, timeout: Some(Duration::from_secs(60)) };
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
        assert_eq!(definitions(&ALL.map(String::from)).len(), 6);
        assert!(definition("task").is_none());
    }

    #[test]
    fn braces_expand_as_bash_does_within_a_cap() {
        assert_eq!(expand_braces("**/*.{ts,tsx}").unwrap(), ["**/*.ts", "**/*.tsx"]);
        assert_eq!(expand_braces("{a,b}{c,d}").unwrap(), ["ac", "ad", "bc", "bd"]);
        assert_eq!(expand_braces("{src,lib/{x,y}}/*.rs").unwrap(), ["src/*.rs", "lib/x/*.rs", "lib/y/*.rs"]);
        // Not alternatives: left as they are.
        for literal in ["{a}", "\\{a,b}", "{a,b", "*.rs", "$(touch x)"] {
            assert_eq!(expand_braces(literal).unwrap(), [literal]);
        }
        assert!(expand_braces(&"{a,b}".repeat(7)).unwrap_err().contains("more than 64"));
        assert!(expand_braces(&"{a,b}".repeat(10_000)).is_err());
    }
}
