//! The agent's own tools: definitions the agent gives with a prompt, checked
//! once (name, size, a schema that compiles), offered to the model beside
//! flue's, and run by the agent's `tools` export through a
//! [`ToolHandler`]. The model's input is checked against the tool's JSON
//! Schema before the agent sees it; a failed check goes back to the model
//! as an error result, and so does the handler's `err`.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};

use super::ModelError;

/// The most tools an agent may give one prompt.
pub const MAX_AGENT_TOOLS: usize = 64;
/// The longest tool description (bytes).
const MAX_DESCRIPTION: usize = 8 * 1024;
/// The largest input schema (bytes of JSON).
const MAX_SCHEMA: usize = 64 * 1024;
/// The most schema errors told to the model at once.
const ERRORS_SHOWN: usize = 5;

/// What a handler's call gives back, when it is done: the outer error is a
/// trap, the inner one the tool's error.
pub type Handled<'a> = Pin<Box<dyn Future<Output = wasmtime::Result<Result<String, String>>> + Send + 'a>>;

/// Runs the agent's tools (its `tools` export).
pub trait ToolHandler: Send {
    /// Run tool `name` with `input` (JSON text, already checked). The outer
    /// error ends the run (the handler trapped); the inner one goes back to
    /// the model.
    fn call<'a>(&'a mut self, name: &'a str, input: &'a str) -> Handled<'a>;
}

/// For prompts that offer no agent tools: never called.
pub struct NoHandler;

impl ToolHandler for NoHandler {
    fn call<'a>(&'a mut self, name: &'a str, _input: &'a str) -> Handled<'a> {
        Box::pin(async move { Ok(Err(format!("the tool {name} has no handler here"))) })
    }
}

/// One tool of the agent's, checked.
#[derive(Clone)]
pub struct AgentTool {
    /// The name the model calls it by.
    pub name: String,
    description: String,
    schema: Value,
    validator: std::sync::Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for AgentTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTool").field("name", &self.name).finish_non_exhaustive()
    }
}

impl AgentTool {
    /// A tool from its definition, or why it cannot be one. `taken` says
    /// whether a name is already one of flue's tools.
    pub fn new(
        name: String,
        description: String,
        input_schema: &str,
        taken: impl Fn(&str) -> bool,
    ) -> Result<AgentTool, ModelError> {
        let refuse = |why: String| Err(ModelError::InvalidInput(format!("agent tool {name:?}: {why}")));
        let well_formed =
            (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return refuse("a tool name is 1-64 characters of A-Z, a-z, 0-9, _ and -".into());
        }
        if taken(&name) || name.starts_with("mcp__") {
            return refuse("the name is one of flue's tools; choose another".into());
        }
        if description.len() > MAX_DESCRIPTION {
            return refuse(format!("its description is over {MAX_DESCRIPTION} bytes"));
        }
        if input_schema.len() > MAX_SCHEMA {
            return refuse(format!("its input schema is over {MAX_SCHEMA} bytes"));
        }
        let schema: Value = match serde_json::from_str(input_schema) {
            Ok(schema) => schema,
            Err(err) => return refuse(format!("its input schema is not JSON: {err}")),
        };
        if schema.get("type").is_some_and(|t| t != "object") {
            return refuse("its input schema must describe an object (\"type\": \"object\")".into());
        }
        // Only the schema itself: no reference is fetched from anywhere.
        let validator = match jsonschema::options().build(&schema) {
            Ok(validator) => validator,
            Err(err) => return refuse(format!("its input schema is not a valid JSON Schema: {err}")),
        };
        Ok(AgentTool { name, description, schema, validator: std::sync::Arc::new(validator) })
    }

    /// Its definition for the model, as `{name, description, parameters}`.
    pub fn definition(&self) -> Value {
        let mut parameters = self.schema.clone();
        if parameters.get("type").is_none() {
            parameters["type"] = json!("object");
        }
        json!({"name": self.name, "description": self.description, "parameters": parameters})
    }

    /// Whether `input` follows the schema; what is wrong with it when not,
    /// for the model to fix.
    pub fn check(&self, input: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(input)
            .take(ERRORS_SHOWN + 1)
            .map(|err| {
                let at = err.instance_path().to_string();
                if at.is_empty() { err.to_string() } else { format!("{at}: {err}") }
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let more = if errors.len() > ERRORS_SHOWN { "\n…" } else { "" };
        let shown = errors.iter().take(ERRORS_SHOWN).map(|e| format!("- {e}")).collect::<Vec<_>>().join("\n");
        Err(format!("{}: the input does not follow the tool's schema:\n{shown}{more}", self.name))
    }
}

/// The agent's tool definitions (name, description, input schema), each
/// checked, at most [`MAX_AGENT_TOOLS`] and no name twice.
pub fn checked(definitions: Vec<(String, String, String)>) -> Result<Vec<AgentTool>, ModelError> {
    if definitions.len() > MAX_AGENT_TOOLS {
        return Err(ModelError::InvalidInput(format!(
            "{} agent tools: a prompt takes at most {MAX_AGENT_TOOLS}",
            definitions.len()
        )));
    }
    let taken = |name: &str| super::tools::find(name).is_some() || ["task", "activate_skill"].contains(&name);
    let mut tools: Vec<AgentTool> = Vec::with_capacity(definitions.len());
    for (name, description, schema) in definitions {
        if tools.iter().any(|t| t.name == name) {
            return Err(ModelError::InvalidInput(format!("agent tool {name:?} is given twice")));
        }
        tools.push(AgentTool::new(name, description, &schema, taken)?);
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, schema: &str) -> Result<AgentTool, ModelError> {
        AgentTool::new(name.into(), "d".into(), schema, |n| n == "read")
    }

    #[test]
    fn definitions_are_checked_once() {
        let schema = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
        assert!(tool("lookup_ticket", schema).is_ok());
        for (name, schema, why) in [
            ("read", schema, "one of flue's tools"),
            ("mcp__x__y", schema, "one of flue's tools"),
            ("has space", schema, "1-64 characters"),
            ("", schema, "1-64 characters"),
            ("t", "{", "not JSON"),
            ("t", r#"{"type":"string"}"#, "an object"),
            ("t", r#"{"type":"object","properties":{"a":{"type":"nonsense"}}}"#, "not a valid JSON Schema"),
        ] {
            let err = tool(name, schema).unwrap_err().to_string();
            assert!(err.contains(why), "{name} {schema}: {err}");
        }
        let long = format!(r#"{{"description":"{}"}}"#, "x".repeat(MAX_SCHEMA));
        assert!(tool("t", &long).unwrap_err().to_string().contains("over"));
    }

    #[test]
    fn the_models_input_is_checked_against_the_schema() {
        let schema = r#"{"type":"object","properties":{"id":{"type":"integer","minimum":1}},"required":["id"],
                         "additionalProperties":false}"#;
        let tool = tool("lookup_ticket", schema).unwrap();
        assert!(tool.check(&json!({"id": 7})).is_ok());
        let err = tool.check(&json!({"id": "seven", "extra": 1})).unwrap_err();
        assert!(err.contains("/id") && err.contains("extra"), "{err}");
        assert!(tool.check(&json!({})).unwrap_err().contains("\"id\" is a required property"));
        assert_eq!(tool.definition()["parameters"]["required"], json!(["id"]));
    }
}
