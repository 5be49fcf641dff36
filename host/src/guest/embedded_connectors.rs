//! The sources of the connectors that ship with flue, compiled into the
//! binary, so that `flue add daytona` works from an installed `flue` as well
//! as from a source checkout. `flue add` writes the source (with its `wit/`,
//! which is flue's own) into flue's cache and builds it there, as it builds
//! any agent; inside a flue checkout it builds the checkout's own source
//! instead, so that edits show.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// One shipped connector: its name and every file of its crate.
pub(crate) struct Embedded {
    /// `flue add NAME`.
    pub name: &'static str,
    /// Path in the crate, content.
    pub files: &'static [(&'static str, &'static str)],
}

macro_rules! daytona_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../connectors/daytona/", $path)))),*]
    };
}

/// Every connector flue ships; a unit test checks that no file is missing.
pub(crate) const CONNECTORS: &[Embedded] = &[Embedded {
    name: "daytona",
    files: daytona_files!(
        "Cargo.toml",
        "Cargo.lock",
        "src/api.rs",
        "src/exec.rs",
        "src/files.rs",
        "src/lib.rs",
        "src/lifecycle.rs",
        "src/model.rs",
        "src/multipart.rs",
        "src/time.rs",
        "src/volumes.rs",
    ),
}];

/// The shipped connector named `name`.
pub(crate) fn find(name: &str) -> Option<&'static Embedded> {
    CONNECTORS.iter().find(|c| c.name == name)
}

impl Embedded {
    /// Its crate (and its `wit/`) written under flue's cache, once per
    /// version of its source: the directory to build.
    pub(crate) fn write_source(&self) -> Result<PathBuf, String> {
        let mut hasher = Sha256::new();
        for (path, content) in self.files.iter().chain(super::wit::FILES) {
            hasher.update(path.as_bytes());
            hasher.update(content.as_bytes());
        }
        let version = hex::encode(&hasher.finalize()[..8]);
        let cache = super::cache_dirs::cache_root()?;
        let sources = super::cache_dirs::private_subdir(&cache, "connector-sources")?;
        let dir = sources.join(format!("{}-{version}", self.name));
        let write = || -> std::io::Result<()> {
            super::wit::write_into(&dir.join("wit"), super::wit::FILES)?;
            for (path, content) in self.files {
                let file = dir.join(path);
                std::fs::create_dir_all(file.parent().expect("a file has a parent"))?;
                std::fs::write(file, content)?;
            }
            Ok(())
        };
        write().map_err(|err| {
            format!("cannot write the {} connector's source into {}: {err}", self.name, dir.display())
        })?;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded files are the crate's: a file added to
    /// `connectors/daytona/src` and not here would break `flue add`.
    #[test]
    fn every_source_file_of_each_connector_is_embedded() {
        for connector in CONNECTORS {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors").join(connector.name);
            let mut on_disk = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
            for entry in std::fs::read_dir(dir.join("src")).unwrap().flatten() {
                on_disk.push(format!("src/{}", entry.file_name().to_string_lossy()));
            }
            // Its wit/ is flue's (tests/integration/portable_examples.rs
            // checks the copy), written from `super::wit`.
            on_disk.sort();
            let mut embedded: Vec<String> = connector.files.iter().map(|(path, _)| path.to_string()).collect();
            embedded.sort();
            assert_eq!(
                embedded, on_disk,
                "{}: host/src/guest/embedded_connectors.rs must list every file",
                connector.name
            );
            for (path, content) in connector.files {
                assert_eq!(std::fs::read_to_string(dir.join(path)).unwrap(), *content, "{path}");
            }
        }
    }
}
