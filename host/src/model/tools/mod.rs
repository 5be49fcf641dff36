//! The tools the model works with, with Flue's names and parameters:
//! `read`, `write`, `edit`, `bash`, `grep`, `glob`. They act on the agent's
//! session (its sandbox and cwd), so they work on every connector. A tool's
//! failure goes back to the model as an error result.
//!
//! Each tool is one entry of [`TOOLS`] — its name, what the model is told,
//! its parameters' schema and its handler (in [`read`], [`write`],
//! [`bash`], [`search`]): a new tool is a new entry.
//!
//! Every tool is bounded ([`super::caps`]): a result carries at most
//! [`MAX_RESULT_BYTES`]; `read` reads a file in parts and never holds it
//! whole; `edit` works on files up to [`super::caps::MAX_TOOL_FILE`] and
//! refuses, before building it, a result larger than that; `write` writes
//! at most that. No text from the model is pasted into a shell line: `grep`
//! and `glob` hand it to a fixed script as environment variables, so
//! narrowing the tools to `read`, `grep` and `glob` really means no command
//! runs.

mod bash;
mod read;
mod search;
mod write;

use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};

use super::caps::MAX_RESULT_BYTES;
use crate::sandbox::session::Session;

/// What a tool's handler returns: its outcome, when it is done.
type Running<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One tool: its name, what the model is told about it, and what runs.
pub struct Tool {
    /// The name the model calls it by.
    pub name: &'static str,
    /// What the model is told it does.
    description: &'static str,
    /// Its parameters (JSON Schema `properties`).
    properties: fn() -> Value,
    /// The parameters it cannot do without.
    required: &'static [&'static str],
    /// Run it on a session.
    run: for<'a> fn(&'a Session, Args<'a>) -> Running<'a>,
}

/// Every tool, in the order the model is told about them.
pub static TOOLS: [Tool; 6] = [
    Tool {
        name: "read",
        description: "Read a text file. Lines are numbered from 1; page through long files with offset and limit.",
        properties: || {
            json!({"path": {"type": "string", "description": "File path, relative to the working directory"},
                   "offset": {"type": "integer", "description": "First line to read (1-indexed)"},
                   "limit": {"type": "integer", "description": "How many lines to read"}})
        },
        required: &["path"],
        run: |session, args| Box::pin(read::read(session, args)),
    },
    Tool {
        name: "write",
        description: "Create or overwrite a file with the given content; parent directories are created.",
        properties: || json!({"path": {"type": "string"}, "content": {"type": "string"}}),
        required: &["path", "content"],
        run: |session, args| Box::pin(write::write(session, args)),
    },
    Tool {
        name: "edit",
        description: "Replace exact text in a file. oldText must occur exactly once unless replaceAll is true.",
        properties: || {
            json!({"path": {"type": "string"}, "oldText": {"type": "string"}, "newText": {"type": "string"},
                   "replaceAll": {"type": "boolean"}})
        },
        required: &["path", "oldText", "newText"],
        run: |session, args| Box::pin(write::edit(session, args)),
    },
    Tool {
        name: "bash",
        description: "Run a shell command (bash) in the working directory. Output is the command's stdout and stderr.",
        properties: || {
            json!({"command": {"type": "string"},
                   "timeout": {"type": "integer", "description": "Seconds before the command is killed (exit 124)"}})
        },
        required: &["command"],
        run: |session, args| Box::pin(bash::bash(session, args)),
    },
    Tool {
        name: "grep",
        description: "Search file contents for a regular expression (or a literal string) under a path.",
        properties: || {
            json!({"pattern": {"type": "string"}, "path": {"type": "string", "description": "Default: ."},
                   "include": {"type": "string", "description": "Only files matching this glob, e.g. *.rs"},
                   "literal": {"type": "boolean"}})
        },
        required: &["pattern"],
        run: |session, args| Box::pin(search::grep(session, args)),
    },
    Tool {
        name: "glob",
        description: "List files matching a glob pattern (e.g. **/*.ts) under a path.",
        properties: || json!({"pattern": {"type": "string"}, "path": {"type": "string", "description": "Default: ."}}),
        required: &["pattern"],
        run: |session, args| Box::pin(search::glob(session, args)),
    },
];

/// Every tool's name.
pub fn names() -> Vec<&'static str> {
    TOOLS.iter().map(|t| t.name).collect()
}

/// The tool called `name`.
pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

impl Tool {
    /// Its definition for the model, as `{name, description, parameters}`.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "parameters": {"type": "object", "properties": (self.properties)(), "required": self.required},
        })
    }
}

/// The definitions of `names`, as `{name, description, parameters}`.
pub fn definitions(names: &[String]) -> Vec<Value> {
    names.iter().filter_map(|name| find(name)).map(Tool::definition).collect()
}

/// Run tool `name` with `input` on `session`.
pub async fn call(session: &Session, name: &str, input: &Value) -> Outcome {
    match find(name) {
        Some(tool) => (tool.run)(session, Args { tool: tool.name, input }).await,
        None => error(format!("there is no tool {name:?}: use one of {}", names().join(", "))),
    }
}

/// A tool's arguments, as the model sent them.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    tool: &'static str,
    input: &'a Value,
}

impl<'a> Args<'a> {
    /// A text argument.
    fn text(&self, key: &str) -> Option<&'a str> {
        self.input.get(key).and_then(Value::as_str)
    }

    /// A whole-number argument: any number the model sends, bounded by the
    /// platform's.
    fn number(&self, key: &str) -> Option<usize> {
        self.input.get(key).and_then(Value::as_u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A true-or-false argument (false when absent).
    fn flag(&self, key: &str) -> bool {
        self.input.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// The error for required arguments that are missing.
    fn missing(&self, keys: &str) -> Outcome {
        error(format!("{}: the parameter {keys} is required", self.tool))
    }
}

/// A tool's result for the model.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// What the model reads.
    pub content: String,
    /// Whether the tool failed.
    pub is_error: bool,
}

impl Outcome {
    /// A result.
    pub fn ok(content: String) -> Outcome {
        Outcome { content, is_error: false }
    }

    /// An error the model reads.
    pub fn error(content: impl Into<String>) -> Outcome {
        Outcome { content: content.into(), is_error: true }
    }
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
pub(crate) fn head(text: &str, what: &str) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text.to_string();
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[{what} truncated at {MAX_RESULT_BYTES} bytes: narrow the search]", &text[..end])
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
    }

    #[test]
    fn every_tool_has_one_entry_and_a_definition() {
        let all: Vec<String> = names().into_iter().map(String::from).collect();
        assert_eq!(all, ["read", "write", "edit", "bash", "grep", "glob"]);
        let definitions = definitions(&all);
        assert_eq!(definitions.len(), 6);
        assert_eq!(definitions[2]["parameters"]["required"], json!(["path", "oldText", "newText"]));
        assert!(find("task").is_none());
    }
}
