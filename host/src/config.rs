//! Configuration values for connectors, from `.env` files and the
//! environment, with Flue's precedence: `--env` files in order (later files
//! win), then the real environment over all files. A missing `--env` file is
//! an error; a `.env` in the current directory is read when present, as the
//! lowest layer.
//!
//! These values configure connectors only. Agents never see them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An `--env` file does not exist.
    #[error("--env {}: file not found", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// An `--env` file cannot be parsed.
    #[error("--env {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where and why (never the value: it may be a secret).
        reason: String,
    },
}

/// Merge the layers: `dotenv` (the project's `.env`) when it exists, then
/// `env_files`, then `env`, the process environment.
pub fn load(
    dotenv: &Path,
    env_files: &[PathBuf],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, ConfigError> {
    // They may hold secrets: no agent's build gets a copy.
    crate::guest::never_copy(std::iter::once(dotenv).chain(env_files.iter().map(PathBuf::as_path)));
    let mut values = HashMap::new();
    if dotenv.is_file() && !env_files.iter().any(|f| f == dotenv) {
        read_file(dotenv, &mut values)?;
    }
    for path in env_files {
        if !path.is_file() {
            return Err(ConfigError::Missing { path: path.clone() });
        }
        read_file(path, &mut values)?;
    }
    values.extend(env);
    Ok(values)
}

fn read_file(path: &Path, values: &mut HashMap<String, String>) -> Result<(), ConfigError> {
    let entries = dotenvy::from_path_iter(path)
        .map_err(|err| ConfigError::Invalid { path: path.into(), reason: err.to_string() })?;
    for entry in entries {
        // Report the line, never the value: it may be a secret.
        let (key, value) = entry.map_err(|err| ConfigError::Invalid {
            path: path.into(),
            reason: match err {
                dotenvy::Error::LineParse(_, index) => format!("cannot parse the entry at byte {index}"),
                other => other.to_string(),
            },
        })?;
        values.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_and_the_environment_wins_over_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.env");
        let second = dir.path().join("b.env");
        std::fs::write(&first, "A=1\nB=1\nC=1\n").unwrap();
        std::fs::write(&second, "B=2\nC=2\n").unwrap();
        let values = load(Path::new(".env"), &[first, second], [("C".to_string(), "env".to_string())]).unwrap();
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "2");
        assert_eq!(values["C"], "env");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = load(Path::new(".env"), &[PathBuf::from("/nonexistent/x.env")], []).unwrap_err();
        assert!(err.to_string().contains("file not found"), "{err}");
    }
}
