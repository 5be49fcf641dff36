//! An agent's declaration of itself — its description, whether it is a
//! webhook, its default limits and sandbox — carried inside its component,
//! so that a `.wasm` dropped into a project's `agents/` says how it wants to
//! be served (as the seed's `export const triggers = { webhook: true }`).
//!
//! The component carries it as a top-level custom section named
//! [`SECTION`] holding JSON with `flue.toml`'s keys:
//!
//! ```json
//! {"description": "Triage new issues", "webhook": true, "deadline-secs": 120,
//!  "memory-mib": 256, "sandbox": "daytona", "sandbox-per-id": true,
//!  "sandbox-idle-secs": 86400}
//! ```
//!
//! flue's build writes it from the agent's own manifest: Rust
//! `[package.metadata.flue]` in `Cargo.toml`, Python `[tool.flue]` in
//! `pyproject.toml`, JavaScript `"flue"` in `package.json`. Any other
//! toolchain may append the section itself. A project's `flue.toml` entry
//! overrides it key by key.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The custom section's name.
pub const SECTION: &str = "flue:agent";
/// The largest declaration read (bytes of JSON).
const MAX_DECLARATION: usize = 16 * 1024;
/// The longest description kept (bytes).
pub const MAX_DESCRIPTION: usize = 1024;
/// The largest manifest read to find a declaration in.
const MAX_MANIFEST: u64 = 4 << 20;

/// What an agent says of itself (or a `flue.toml` entry says of it): each
/// key unset unless given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentSettings {
    /// What it does, for people (`GET /agents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Exposed as a webhook (`POST /agents/<name>/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<bool>,
    /// Its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<u64>,
    /// Its memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Its sandbox's connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Its runs' sandbox belongs to their invocation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_per_id: Option<bool>,
    /// How long an id's sandbox may go unused before it is deleted (0:
    /// never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_idle_secs: Option<u64>,
}

impl AgentSettings {
    /// These settings with `over`'s keys, where it sets them, in their place.
    pub fn overridden_by(&self, over: &AgentSettings) -> AgentSettings {
        AgentSettings {
            description: over.description.clone().or_else(|| self.description.clone()),
            webhook: over.webhook.or(self.webhook),
            deadline_secs: over.deadline_secs.or(self.deadline_secs),
            memory_mib: over.memory_mib.or(self.memory_mib),
            sandbox: over.sandbox.clone().or_else(|| self.sandbox.clone()),
            sandbox_per_id: over.sandbox_per_id.or(self.sandbox_per_id),
            sandbox_idle_secs: over.sandbox_idle_secs.or(self.sandbox_idle_secs),
        }
    }
}

/// Why a declaration cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    /// The manifest or component cannot be read.
    #[error("cannot read {what}: {reason}")]
    Read {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// What it declares is not a declaration.
    #[error("{what}: its flue declaration is not valid: {reason}")]
    Invalid {
        /// Where.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// The declaration in the agent source in `dir`, from its language's
/// manifest; `None` when it declares nothing.
pub fn from_source(dir: &Path) -> Result<Option<AgentSettings>, DeclarationError> {
    let read = |name: &str| -> Result<Option<String>, DeclarationError> {
        use std::io::Read as _;
        let path = dir.join(name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(DeclarationError::Read { what: name.into(), reason: err.to_string() }),
        };
        let mut text = String::new();
        file.take(MAX_MANIFEST)
            .read_to_string(&mut text)
            .map_err(|err| DeclarationError::Read { what: name.into(), reason: err.to_string() })?;
        Ok(Some(text))
    };
    let invalid = |what: &str, reason: String| DeclarationError::Invalid { what: what.into(), reason };
    let from_toml = |name: &str, path: &[&str]| -> Result<Option<AgentSettings>, DeclarationError> {
        let Some(text) = read(name)? else { return Ok(None) };
        let table: toml::Table = toml::from_str(&text).map_err(|err| invalid(name, err.to_string()))?;
        let mut value = toml::Value::Table(table);
        for key in path {
            match value.get(key) {
                Some(inner) => value = inner.clone(),
                None => return Ok(None),
            }
        }
        let what = format!("{name} [{}]", path.join("."));
        let settings: AgentSettings =
            value.try_into().map_err(|err: toml::de::Error| invalid(&what, err.to_string()))?;
        checked(settings, &what).map(Some)
    };
    if let Some(found) = from_toml("Cargo.toml", &["package", "metadata", "flue"])? {
        return Ok(Some(found));
    }
    if let Some(found) = from_toml("pyproject.toml", &["tool", "flue"])? {
        return Ok(Some(found));
    }
    if let Some(text) = read("package.json")? {
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| invalid("package.json", err.to_string()))?;
        if let Some(value) = json.get("flue") {
            let settings: AgentSettings = serde_json::from_value(value.clone())
                .map_err(|err| invalid("package.json \"flue\"", err.to_string()))?;
            return checked(settings, "package.json \"flue\"").map(Some);
        }
    }
    Ok(None)
}

/// A declaration as kept: its description bounded.
fn checked(settings: AgentSettings, what: &str) -> Result<AgentSettings, DeclarationError> {
    if settings.description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        return Err(DeclarationError::Invalid {
            what: what.into(),
            reason: format!("the description is longer than {MAX_DESCRIPTION} bytes"),
        });
    }
    Ok(settings)
}

/// The custom section that carries `settings`, to append to a component.
pub fn section(settings: &AgentSettings) -> Vec<u8> {
    let payload = serde_json::to_vec(settings).expect("a declaration serialises");
    let mut content = Vec::new();
    leb128(&mut content, SECTION.len() as u64);
    content.extend_from_slice(SECTION.as_bytes());
    content.extend_from_slice(&payload);
    let mut section = vec![0u8];
    leb128(&mut section, content.len() as u64);
    section.extend_from_slice(&content);
    section
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Read an unsigned LEB128 at `at`, moving it past.
fn read_leb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The declaration a component carries (its last top-level [`SECTION`]),
/// if any. Only the top-level sections are walked (their bodies skipped),
/// so a component of any size is read in a few steps.
pub fn from_component(bytes: &[u8], what: &str) -> Result<Option<AgentSettings>, DeclarationError> {
    let invalid = |reason: &str| DeclarationError::Invalid { what: what.into(), reason: reason.into() };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid("not a WebAssembly binary"));
    }
    let mut at = 8;
    let mut found = None;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = read_leb128(bytes, &mut at).ok_or_else(|| invalid("a section's size is malformed"))?;
        let end = at.checked_add(usize::try_from(size).unwrap_or(usize::MAX)).filter(|&end| end <= bytes.len());
        let end = end.ok_or_else(|| invalid("a section runs past the end"))?;
        if id == 0 {
            let mut name_at = at;
            let name_len = read_leb128(bytes, &mut name_at).unwrap_or(u64::MAX);
            let name_end = name_at.checked_add(usize::try_from(name_len).unwrap_or(usize::MAX));
            if let Some(name_end) = name_end.filter(|&e| e <= end)
                && &bytes[name_at..name_end] == SECTION.as_bytes()
            {
                found = Some(&bytes[name_end..end]);
            }
        }
        at = end;
    }
    let Some(payload) = found else { return Ok(None) };
    if payload.len() > MAX_DECLARATION {
        return Err(invalid(&format!("its {SECTION} section is larger than {MAX_DECLARATION} bytes")));
    }
    let settings: AgentSettings = serde_json::from_slice(payload)
        .map_err(|err| invalid(&format!("its {SECTION} section is not a declaration: {err}")))?;
    checked(settings, what).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> AgentSettings {
        AgentSettings {
            description: Some("Triage new issues".into()),
            webhook: Some(true),
            deadline_secs: Some(120),
            ..Default::default()
        }
    }

    #[test]
    fn a_declaration_appended_to_a_component_is_read_back_and_the_last_one_wins() {
        // A component's preamble, one unrelated custom section, then ours twice.
        let mut component = b"\0asm\x0d\x00\x01\x00".to_vec();
        component.extend_from_slice(&[0, 4, 3, b'a', b'b', b'c']);
        assert_eq!(from_component(&component, "x").unwrap(), None);
        component.extend(section(&AgentSettings { webhook: Some(false), ..Default::default() }));
        component.extend(section(&declared()));
        assert_eq!(from_component(&component, "x").unwrap(), Some(declared()));
        let mut cut = component.clone();
        cut.truncate(cut.len() - 3);
        assert!(from_component(&cut, "x").is_err(), "a section past the end is refused");
        assert!(from_component(b"not wasm", "x").is_err());
    }

    #[test]
    fn each_language_declares_in_its_own_manifest_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(from_source(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"t\"\n[package.metadata.flue]\ndescription = \"Triage new issues\"\nwebhook = true\ndeadline-secs = 120\n",
        )
        .unwrap();
        assert_eq!(from_source(dir.path()).unwrap(), Some(declared()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), "[tool.flue]\nwebhook = true\n").unwrap();
        assert_eq!(from_source(dir.path()).unwrap().unwrap().webhook, Some(true));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), r#"{"name": "t", "flue": {"webhok": true}}"#).unwrap();
        let err = from_source(dir.path()).unwrap_err().to_string();
        assert!(err.contains("webhok"), "{err}");
    }

    #[test]
    fn a_project_entry_overrides_a_declaration_key_by_key() {
        let project = AgentSettings { webhook: Some(false), memory_mib: Some(64), ..Default::default() };
        let merged = declared().overridden_by(&project);
        assert_eq!(merged.webhook, Some(false));
        assert_eq!(merged.deadline_secs, Some(120));
        assert_eq!(merged.memory_mib, Some(64));
        assert_eq!(merged.description.as_deref(), Some("Triage new issues"));
    }
}
