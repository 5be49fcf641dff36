//! `flue new`: a new agent, from a template that builds and runs as is.
//!
//! The templates and the WIT ([`super::wit`]) are compiled into the binary,
//! so `flue new` works anywhere; each new agent gets its own copy of `wit/`.

use std::path::{Path, PathBuf};

use super::build::Language;

const README: &str = include_str!("../../templates/README.md");

struct Template {
    language: &'static str,
    files: &'static [(&'static str, &'static str)],
    toolchain: &'static str,
}

fn template(language: Language) -> Template {
    match language {
        Language::Rust => Template {
            language: "Rust",
            files: &[
                ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
                ("src/lib.rs", include_str!("../../templates/rust/src/lib.rs")),
                (".gitignore", "target/\n"),
            ],
            toolchain: "It needs Rust (rustup); flue adds the wasm32-wasip2 target when it is missing.",
        },
        Language::Python => Template {
            language: "Python",
            files: &[
                ("app.py", include_str!("../../templates/python/app.py")),
                ("pyproject.toml", include_str!("../../templates/python/pyproject.toml")),
                (".gitignore", "target/\n__pycache__/\n"),
            ],
            toolchain: "It needs python3; flue installs componentize-py 0.25.1 (from PyPI) into its cache \
                        the first time it builds a Python agent.",
        },
        Language::JavaScript => Template {
            language: "JavaScript",
            files: &[
                ("agent.js", include_str!("../../templates/js/agent.js")),
                ("package.json", include_str!("../../templates/js/package.json")),
                (".gitignore", "target/\nnode_modules/\n"),
            ],
            toolchain: "It needs node and npm; flue installs componentize-js 0.23.0 (from the npm \
                        registry) into its cache the first time it builds a JavaScript agent.",
        },
    }
}

/// Why `flue new` could not create the agent.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as a directory and package name.
    #[error("{name:?} is not a valid agent name: use lowercase letters, digits, - and _, starting with a letter")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// Something is already there.
    #[error("{} already exists and is not empty", path.display())]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
}

/// Create `parent/name` with a new agent in `language`.
pub fn create(language: Language, name: &str, parent: &Path) -> Result<PathBuf, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::InvalidName { name: name.into() });
    }
    let dir = parent.join(name);
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists { path: dir });
    }
    let template = template(language);
    let readme = README.replace("{{language}}", template.language).replace("{{toolchain}}", template.toolchain);
    let wit = super::wit::FILES.iter().map(|(name, content)| (format!("wit/{name}"), *content));
    let files = template
        .files
        .iter()
        .map(|(path, content)| (path.to_string(), *content))
        .chain(wit)
        .chain([("README.md".to_string(), readme.as_str())]);
    for (relative, content) in files {
        let path = dir.join(relative);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("files live in a directory"))?;
            std::fs::write(&path, content.replace("{{name}}", name))
        };
        write().map_err(|err| ScaffoldError::Write { path: path.clone(), reason: err.to_string() })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_existing_work_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(create(Language::Rust, "Bad Name", dir.path()), Err(ScaffoldError::InvalidName { .. })));
        let made = create(Language::Python, "my-agent", dir.path()).unwrap();
        assert!(made.join("app.py").is_file() && made.join("wit/worlds.wit").is_file());
        assert!(std::fs::read_to_string(made.join("README.md")).unwrap().contains("flue run my-agent"));
        assert!(matches!(create(Language::Python, "my-agent", dir.path()), Err(ScaffoldError::Exists { .. })));
    }
}
