//! Local volumes: named directories under flue's data directory
//! (`$FLUE_DATA_DIR`, else `$XDG_DATA_HOME/flue`, else
//! `~/.local/share/flue`, then `volumes/<name>`) that outlive sandboxes.
//! Under bubblewrap a volume is bind-mounted at its mount path; without
//! isolation it can only appear inside the sandbox directory (as a symbolic
//! link). The file API reaches a volume directly, confined to it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::error::{ErrorKind, SandboxError, SandboxResult};
use crate::sandbox::{VolumeInfo, VolumeMount};

/// flue's data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLUE_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("flue");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/flue"),
        None => std::env::temp_dir().join("flue-data"),
    }
}

/// A volume mounted into a sandbox: where it is on the host, where
/// commands see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Mounted {
    pub host: PathBuf,
    pub visible: String,
}

/// The volumes directory.
pub(crate) struct Volumes {
    dir: PathBuf,
}

fn check_name(name: &str) -> SandboxResult<()> {
    let fine = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(SandboxError::invalid_input(format!(
            "{name:?} is not a volume name: use letters, digits, '-', '_' and '.' (not first)"
        )))
    }
}

impl Volumes {
    pub fn new(dir: PathBuf) -> Self {
        Volumes { dir }
    }

    fn path(&self, name: &str) -> SandboxResult<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    fn info(&self, name: &str) -> VolumeInfo {
        VolumeInfo {
            name: name.to_string(),
            state: "ready".into(),
            created_ms: super::store::modified_ms(&self.dir.join(name)),
        }
    }

    pub fn list(&self) -> SandboxResult<Vec<VolumeInfo>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(SandboxError::other(format!("cannot list {}: {err}", self.dir.display()))),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names.iter().map(|name| self.info(name)).collect())
    }

    pub fn create(&self, name: &str) -> SandboxResult<VolumeInfo> {
        let path = self.path(name)?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(|err| {
            SandboxError::other(format!("cannot create the volumes directory {}: {err}", self.dir.display()))
        })?;
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => Ok(self.info(name)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(SandboxError::new(ErrorKind::AlreadyExists, format!("a local volume named {name} exists already")))
            }
            Err(err) => Err(SandboxError::other(format!("cannot create volume {name}: {err}"))),
        }
    }

    pub fn delete(&self, name: &str) -> SandboxResult<()> {
        let path = self.path(name)?;
        if !path.is_dir() {
            return Err(SandboxError::not_found(format!("no local volume named {name}")));
        }
        std::fs::remove_dir_all(&path).map_err(|err| SandboxError::other(format!("cannot delete volume {name}: {err}")))
    }

    /// Resolve the mounts of a new sandbox: each volume's directory (created
    /// when asked and missing), narrowed to its subpath.
    pub fn resolve(&self, mounts: &[VolumeMount]) -> SandboxResult<Vec<Mounted>> {
        mounts
            .iter()
            .map(|mount| {
                if !mount.mount_path.starts_with('/') || mount.mount_path.split('/').any(|c| c == "..") {
                    return Err(SandboxError::invalid_input(format!(
                        "volume {}: the mount path {:?} must be absolute, without '..'",
                        mount.volume, mount.mount_path
                    )));
                }
                let dir = self.path(&mount.volume)?;
                if !dir.is_dir() {
                    if !mount.create {
                        return Err(SandboxError::not_found(format!(
                            "no local volume named {0} (create it with `flue volumes create {0}`, or mount it \
                             with create: true)",
                            mount.volume
                        )));
                    }
                    match self.create(&mount.volume) {
                        Ok(_) => {}
                        Err(err) if err.kind == ErrorKind::AlreadyExists => {}
                        Err(err) => return Err(err),
                    }
                }
                let mut host = dir;
                if let Some(subpath) = mount.subpath.as_deref().filter(|s| !s.is_empty()) {
                    let relative = Path::new(subpath);
                    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
                        return Err(SandboxError::invalid_input(format!(
                            "volume {}: the subpath {subpath:?} must be relative, without '..'",
                            mount.volume
                        )));
                    }
                    host = host.join(relative);
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&host)
                        .map_err(|err| SandboxError::other(format!("cannot create {}: {err}", host.display())))?;
                }
                Ok(Mounted { host, visible: mount.mount_path.trim_end_matches('/').to_string() })
            })
            .collect()
    }
}
