//! What the working directory offers the model, found as Flue finds it:
//! skills (`.agents/skills/<name>/SKILL.md`, listed by name and description
//! in the system prompt, loaded on demand by `activate_skill`) and named
//! sub-agents (`.agents/agents/<name>.md`, for the `task` tool; `general`
//! is always there). Both are Markdown with a front matter of `key: value`
//! lines. Everything read is bounded: how many entries, and how much of
//! each file.

use serde_json::{Value, json};

use super::tools::{Outcome, head};
use crate::events::{EventLog, LogLevel};
use crate::sandbox::session::Session;

/// Where skills live, under the working directory.
pub const SKILLS_DIR: &str = ".agents/skills";
/// Where named sub-agents live, under the working directory.
pub const AGENTS_DIR: &str = ".agents/agents";
/// The sub-agent that is always there: the prompt's own tools, no
/// instructions of its own.
pub const GENERAL_AGENT: &str = "general";
/// The most skills (and, apart, sub-agents) listed.
const MAX_ENTRIES: usize = 100;
/// The most of a `SKILL.md` or agent file read (bytes).
const MAX_FILE: usize = 256 * 1024;
/// The longest description listed (characters).
const MAX_DESCRIPTION: usize = 1024;
/// The most files of a skill's directory named when it is activated.
const MAX_RESOURCES: usize = 50;

/// A skill: its name and what it is for.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skill {
    /// Its name (its directory's, unless the front matter gives one).
    pub name: String,
    /// What it is for, from its front matter.
    pub description: String,
    /// Its directory, absolute.
    pub dir: String,
}

/// A named sub-agent the `task` tool can hand work to.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubAgent {
    /// Its name (the file's, unless the front matter gives one).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its instructions (the file's body).
    pub instructions: String,
    /// Its model, when it names one.
    pub model: Option<String>,
    /// How much it reasons, when it says.
    pub thinking: Option<super::Thinking>,
}

impl SubAgent {
    /// The sub-agent that is always there.
    pub fn general() -> SubAgent {
        SubAgent {
            name: GENERAL_AGENT.into(),
            description: "A general-purpose agent with the same tools, for a self-contained part of the work".into(),
            instructions: String::new(),
            model: None,
            thinking: None,
        }
    }
}

/// A Markdown file's front matter (`key: value` lines between `---` lines)
/// and its body; no front matter is an empty one.
pub fn front_matter(text: &str) -> (Vec<(String, String)>, &str) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n")) else {
        return (Vec::new(), text);
    };
    let mut fields = Vec::new();
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        offset += line.len();
        let line = line.trim_end();
        if line == "---" {
            return (fields, &rest[offset..]);
        }
        if let Some((key, value)) = line.split_once(':')
            && !key.starts_with([' ', '\t', '#'])
        {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            fields.push((key.trim().to_string(), unquoted.to_string()));
        }
    }
    // No closing line: not front matter.
    (Vec::new(), text)
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn short(text: &str) -> String {
    text.chars().take(MAX_DESCRIPTION).collect()
}

/// The skills under the session's working directory, by name.
pub async fn skills(session: &Session, events: &EventLog) -> Vec<Skill> {
    let Ok(mut names) = session.readdir(SKILLS_DIR).await else { return Vec::new() };
    names.sort();
    let mut found = Vec::new();
    for dir_name in names.into_iter().take(MAX_ENTRIES) {
        let path = format!("{SKILLS_DIR}/{dir_name}/SKILL.md");
        let Some(text) = super::read_start(session, &path, MAX_FILE).await else { continue };
        let (fields, _) = front_matter(&text);
        let Some(description) = field(&fields, "description") else {
            events.log(
                "flue",
                LogLevel::Warn,
                format!("skill {path} has no description in its front matter: it is left out"),
            );
            continue;
        };
        let name = field(&fields, "name").unwrap_or(&dir_name).to_string();
        let dir = session.resolve(&format!("{SKILLS_DIR}/{dir_name}")).unwrap_or_default();
        if !found.iter().any(|s: &Skill| s.name == name) {
            found.push(Skill { name, description: short(description), dir });
        }
    }
    found
}

/// The named sub-agents under the session's working directory, `general`
/// first.
pub async fn sub_agents(session: &Session) -> Vec<SubAgent> {
    let mut agents = vec![SubAgent::general()];
    let Ok(mut names) = session.readdir(AGENTS_DIR).await else { return agents };
    names.sort();
    for file in names.into_iter().filter(|n| n.ends_with(".md")).take(MAX_ENTRIES) {
        let Some(text) = super::read_start(session, &format!("{AGENTS_DIR}/{file}"), MAX_FILE).await else {
            continue;
        };
        let (fields, body) = front_matter(&text);
        let name = field(&fields, "name").unwrap_or(file.trim_end_matches(".md")).to_string();
        if agents.iter().any(|a| a.name == name) {
            continue;
        }
        agents.push(SubAgent {
            description: short(field(&fields, "description").unwrap_or("(no description)")),
            instructions: body.trim().to_string(),
            model: field(&fields, "model").map(String::from),
            thinking: field(&fields, "thinking").and_then(super::Thinking::parse),
            name,
        });
    }
    agents
}

/// The system prompt's list of skills.
pub fn skills_section(skills: &[Skill]) -> String {
    let list: Vec<String> = skills.iter().map(|s| format!("- **{}** — {}", s.name, s.description)).collect();
    format!(
        "## Available Skills\nWhen a request matches a skill, call the `activate_skill` tool with the skill's name \
         to load its instructions, then follow them.\n{}",
        list.join("\n")
    )
}

/// The system prompt's list of sub-agents.
pub fn agents_section(agents: &[SubAgent]) -> String {
    let list: Vec<String> = agents.iter().map(|a| format!("- **{}** — {}", a.name, a.description)).collect();
    format!(
        "## Available Agents\nHand a self-contained part of the work to one with the `task` tool; it answers with \
         its result.\n{}",
        list.join("\n")
    )
}

/// `activate_skill`'s definition.
pub fn activate_skill_definition() -> Value {
    json!({
        "name": "activate_skill",
        "description": "Load a skill's instructions by name (see Available Skills).",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    })
}

/// `activate_skill`: the skill's instructions and where its files are.
pub async fn activate_skill(session: &Session, skills: &[Skill], input: &Value) -> Outcome {
    let Some(name) = input.get("name").and_then(Value::as_str) else {
        return Outcome::error("activate_skill: the parameter name is required");
    };
    let Some(skill) = skills.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
        return Outcome::error(format!("Skill {name:?} is not available. Available skills: {}", known.join(", ")));
    };
    let Some(text) = super::read_start(session, &format!("{}/SKILL.md", skill.dir), MAX_FILE).await else {
        return Outcome::error(format!("the skill {name:?} can no longer be read"));
    };
    let (_, body) = front_matter(&text);
    let mut files = session.readdir(&skill.dir).await.unwrap_or_default();
    files.sort();
    let more = files.len().saturating_sub(MAX_RESOURCES);
    files.truncate(MAX_RESOURCES);
    let mut resources = format!("- Base directory: {}", skill.dir);
    if !files.is_empty() {
        resources.push_str(&format!("\n- Files: {}", files.join(", ")));
        if more > 0 {
            resources.push_str(&format!(" (and {more} more)"));
        }
    }
    let content = format!(
        "Run the skill named {name:?}.\n<skill_instructions>\n{}\n</skill_instructions>\n<skill_resources>\n{resources}\n</skill_resources>",
        body.trim()
    );
    Outcome::ok(head(&content, "skill"))
}

/// The `task` tool's definition, naming the sub-agents there are.
pub fn task_definition(agents: &[SubAgent]) -> Value {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    json!({
        "name": "task",
        "description": format!(
            "Hand a self-contained piece of work to a sub-agent, which works in the same sandbox with a fresh \
             conversation and answers with its result. Agents: {}.", names.join(", ")),
        "parameters": {"type": "object", "properties": {
            "prompt": {"type": "string", "description": "What the sub-agent is to do, with all it needs to know"},
            "agent": {"type": "string", "description": "The sub-agent, by name (see Available Agents)"},
            "description": {"type": "string", "description": "A few words on the task, for the log"},
            "cwd": {"type": "string", "description": "Its working directory, relative to yours"},
        }, "required": ["prompt", "agent"]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_read_leniently() {
        let (fields, body) = front_matter("---\nname: review\ndescription: \"Check a diff: carefully\"\n---\nBody\n");
        assert_eq!(field(&fields, "name"), Some("review"));
        assert_eq!(field(&fields, "description"), Some("Check a diff: carefully"));
        assert_eq!(body, "Body\n");
        let (fields, body) = front_matter("no front matter\n---\n");
        assert!(fields.is_empty() && body.starts_with("no front"));
        let (fields, _) = front_matter("---\nname: x\nnever closed\n");
        assert!(fields.is_empty());
    }
}
