//! Where local sandboxes live on disk: `<base>/<id>/` (the files) beside
//! `<base>/<id>.json` (name, labels, environment).
//!
//! Everything here is private to the user running flue: the base directory
//! and every sandbox directory are `0700`, metadata files `0600`. A base
//! directory that is a symbolic link, or that someone else owns or can write
//! to, is refused with a clear error rather than used: it could redirect
//! sandboxes, or hand what they leave behind (say, a setuid binary) to other
//! users of the machine.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::error::{SandboxError, SandboxResult};

/// What is kept about a sandbox besides its files.
#[derive(Clone, Serialize, Deserialize, Default)]
pub(crate) struct Metadata {
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    /// Its limits (absent in sandboxes kept by older versions: defaults).
    #[serde(default)]
    pub limits: Option<super::SandboxLimits>,
    /// Its volumes.
    #[serde(default)]
    pub mounts: Vec<super::MountSpec>,
}

/// The directory that holds local sandboxes.
pub(crate) struct SandboxDirs {
    base: PathBuf,
}

/// When `path` was last modified, in milliseconds since the Unix epoch.
pub(crate) fn modified_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

fn io_error(context: &str, path: &Path, err: std::io::Error) -> SandboxError {
    SandboxError::other(format!("{context} {}: {err}", path.display()))
}

/// Create `dir` private, or check that the existing one is ours alone
/// ([`crate::private_dir`]); `purpose` and `remedy` make the refusal's
/// message.
pub(crate) fn ensure_private_dir(dir: &Path, purpose: &str, remedy: &str) -> SandboxResult<()> {
    crate::private_dir::ensure_dir(dir, true).map_err(|why| {
        SandboxError::permission_denied(format!(
            "refusing to {purpose} in {}: {why}. Remove it, or {remedy}",
            dir.display()
        ))
    })
}

/// `metadata` in a new private file at `path` (never through one already there).
fn write_new_metadata(path: &Path, metadata: &Metadata) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(metadata).expect("metadata serialises");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(&json)
}

impl SandboxDirs {
    pub fn new(base: PathBuf) -> Self {
        SandboxDirs { base }
    }

    fn paths_for(&self, id: &str) -> SandboxResult<(PathBuf, PathBuf)> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SandboxError::invalid_input(format!("{id:?} is not a local sandbox id (like local-1a2b3c4d)")));
        }
        Ok((self.base.join(id), self.base.join(format!("{id}.json"))))
    }

    /// Create the base directory, or check that the existing one is ours
    /// and private.
    fn ensure_base(&self) -> SandboxResult<()> {
        ensure_private_dir(
            &self.base,
            "keep sandboxes",
            "point TMPDIR (or --workdir) at a directory only you can write to",
        )
    }

    /// A new, private sandbox directory with its metadata; returns its root.
    pub fn create(&self, id: &str, metadata: &Metadata) -> SandboxResult<PathBuf> {
        self.ensure_base()?;
        let (root, meta_path) = self.paths_for(id)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|err| io_error("cannot create sandbox directory", &root, err))?;
        write_new_metadata(&meta_path, metadata).map_err(|err| io_error("cannot write", &meta_path, err))?;
        Ok(root)
    }

    /// Replace sandbox `id`'s metadata (at once: a reader sees the old or
    /// the new, never a part).
    pub fn rewrite(&self, id: &str, metadata: &Metadata) -> SandboxResult<()> {
        let (_, meta_path) = self.paths_for(id)?;
        let next = meta_path.with_extension("json.next");
        let _ = std::fs::remove_file(&next);
        write_new_metadata(&next, metadata)
            .and_then(|()| std::fs::rename(&next, &meta_path))
            .map_err(|err| io_error("cannot write", &meta_path, err))
    }

    /// An existing sandbox's root and metadata.
    pub fn open(&self, id: &str) -> SandboxResult<(PathBuf, Metadata)> {
        let (root, meta_path) = self.paths_for(id)?;
        match std::fs::read(&meta_path) {
            Ok(bytes) => Ok((root, serde_json::from_slice(&bytes).unwrap_or_default())),
            Err(_) => Err(SandboxError::not_found(format!(
                "no local sandbox {id} in {} (was it created with --keep?)",
                self.base.display()
            ))),
        }
    }

    /// Delete a sandbox's files and metadata.
    pub fn delete(&self, id: &str) -> SandboxResult<()> {
        let (root, meta_path) = self.paths_for(id)?;
        if !meta_path.exists() {
            return Err(SandboxError::not_found(format!("no local sandbox {id}")));
        }
        std::fs::remove_dir_all(&root).or_else(ignore_missing).map_err(|err| io_error("cannot remove", &root, err))?;
        std::fs::remove_file(&meta_path)
            .or_else(ignore_missing)
            .map_err(|err| io_error("cannot remove", &meta_path, err))?;
        Ok(())
    }

    /// Every sandbox: (id, metadata), sorted by id.
    /// When sandbox `id` was created (its metadata file's time), in
    /// milliseconds since the Unix epoch.
    pub fn created_ms(&self, id: &str) -> Option<i64> {
        modified_ms(&self.paths_for(id).ok()?.1)
    }

    pub fn list(&self) -> Vec<(String, Metadata)> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let (Some(id), Some("json")) =
                (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
            else {
                continue;
            };
            if let Ok(bytes) = std::fs::read(&path) {
                found.push((id.to_string(), serde_json::from_slice::<Metadata>(&bytes).unwrap_or_default()));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}

fn ignore_missing(err: std::io::Error) -> std::io::Result<()> {
    if err.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(err) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn directories_are_private_and_a_symlinked_base_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SandboxDirs::new(tmp.path().join("flue-local"));
        let root = store.create("local-a", &Metadata::default()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(store.base.as_path()), 0o700);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&tmp.path().join("flue-local/local-a.json")), 0o600);

        // An older flue's 0755 base is tightened, not refused.
        std::fs::set_permissions(store.base.as_path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        store.create("local-b", &Metadata::default()).unwrap();
        assert_eq!(mode(store.base.as_path()), 0o700);

        std::fs::set_permissions(store.base.as_path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = store.create("local-c", &Metadata::default()).unwrap_err();
        assert!(err.message.contains("others can write to it"), "{err}");

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("linked")).unwrap();
        let err = SandboxDirs::new(tmp.path().join("linked")).create("local-d", &Metadata::default()).unwrap_err();
        assert!(err.message.contains("is a symbolic link"), "{err}");
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "nothing was created through the link");
    }
}
