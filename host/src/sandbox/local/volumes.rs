//! Local volumes: named directories under flue's data directory
//! (`$FLUE_DATA_DIR`, else `$XDG_DATA_HOME/flue`, else
//! `~/.local/share/flue`, then `volumes/<name>`) that outlive sandboxes.
//! Under bubblewrap a volume is bind-mounted at its mount path; without
//! isolation it can only appear inside the sandbox directory (as a symbolic
//! link). The file API reaches a volume directly, confined to it.
//!
//! A volume's contents are written by sandboxes, so nothing in it is trusted:
//! a subpath is resolved one component at a time beneath the volume's
//! directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` — a
//! symbolic link anywhere on the way is refused, not followed — and what is
//! mounted (`bwrap --bind-fd`) and what the file API confines itself to is
//! that resolved descriptor, never a path looked up again later. Mount paths
//! that would hide what the sandbox itself relies on (`/`, `/proc`, `/dev`,
//! `/sys`, the system directories, the supervisor at `/run/flue`) are
//! refused.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
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

/// Paths a volume may not be mounted at, over, or under: the sandbox needs
/// them as they are (`/proc` for the supervisor's process table, `/dev`,
/// the read-only system, the supervisor's own binary).
const RESERVED_PATHS: &[&str] =
    &["/proc", "/dev", "/sys", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/run/flue"];

/// The most volumes one sandbox mounts.
pub(crate) const MAX_VOLUMES: usize = 32;

/// A volume mount as a sandbox's metadata keeps it: which volume, which
/// part of it, where commands see it. Never a resolved host path: that is
/// found again, safely, each time the sandbox is opened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MountSpec {
    /// The volume's name (empty in metadata written by flue before 0.2:
    /// such a sandbox is refused rather than trusted).
    #[serde(default)]
    pub volume: String,
    /// The directory inside the volume that is mounted, relative.
    #[serde(default)]
    pub subpath: Option<String>,
    /// Where commands see it.
    pub visible: String,
}

/// A volume mount resolved for an open sandbox.
#[derive(Clone, Debug)]
pub(crate) struct Mounted {
    /// Where commands see it.
    pub visible: String,
    /// The mounted directory, opened beneath the volume (`O_PATH`).
    pub dir: Arc<OwnedFd>,
    /// Where that directory was when it was opened (for messages, and the
    /// symbolic link of an unisolated sandbox).
    pub host: PathBuf,
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

/// `path` as an absolute path without `.`, empty components or a trailing
/// `/`, or why it cannot be a mount path.
fn normal_mount_path(volume: &str, path: &str) -> SandboxResult<String> {
    let refuse =
        |why: &str| Err(SandboxError::invalid_input(format!("volume {volume}: the mount path {path:?} {why}")));
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return refuse("must be absolute, without '..'");
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.is_empty() {
        return refuse("would hide the whole sandbox: mount it at a directory such as /data");
    }
    let normal = format!("/{}", parts.join("/"));
    let overlaps = |reserved: &str| {
        normal == reserved
            || reserved.strip_prefix(normal.as_str()).is_some_and(|rest| rest.starts_with('/'))
            || normal.strip_prefix(reserved).is_some_and(|rest| rest.starts_with('/'))
    };
    if let Some(reserved) = RESERVED_PATHS.iter().find(|r| overlaps(r)) {
        return refuse(&format!(
            "would cover or sit inside {reserved}, which the sandbox itself needs: mount it elsewhere (e.g. /data)"
        ));
    }
    Ok(normal)
}

/// Whether `inner` is `outer` or lies under it.
fn within(inner: &str, outer: &str) -> bool {
    inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

/// Refuse mounts inside one another (the inner mount point would be looked
/// up through the outer volume, which sandboxes write) and mounts that
/// would hide the sandbox's own directory.
fn check_overlaps(specs: Vec<MountSpec>, visible_root: &str) -> SandboxResult<Vec<MountSpec>> {
    for (i, a) in specs.iter().enumerate() {
        if within(visible_root, &a.visible) {
            return Err(SandboxError::invalid_input(format!(
                "volume {}: the mount path {} would hide the sandbox's own directory {visible_root}: mount it inside \
                 it (e.g. {visible_root}/data) or beside it",
                a.volume, a.visible
            )));
        }
        if let Some(b) =
            specs[i + 1..].iter().find(|b| within(&a.visible, &b.visible) || within(&b.visible, &a.visible))
        {
            return Err(SandboxError::invalid_input(format!(
                "volumes {} and {} would be mounted one inside the other ({} and {}): give them separate paths",
                a.volume, b.volume, a.visible, b.visible
            )));
        }
    }
    Ok(specs)
}

/// `name` opened beneath `dir` as a directory, following no symbolic link.
fn open_dir_beneath(dir: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Where the directory `fd` is, as the kernel names it.
fn path_of(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
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
            created_ms: super::sandbox_dirs::modified_ms(&self.dir.join(name)),
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

    /// The volumes directory and the data directory holding it, created
    /// private or checked to be ours alone: whoever could write them could
    /// swap a volume for a link.
    fn ensure_private(&self) -> SandboxResult<()> {
        const REMEDY: &str = "point FLUE_DATA_DIR at a directory only you can write to";
        if let Some(data_dir) = self.dir.parent() {
            super::sandbox_dirs::ensure_private_dir(data_dir, "keep flue's data", REMEDY)?;
        }
        super::sandbox_dirs::ensure_private_dir(&self.dir, "keep volumes", REMEDY)
    }

    pub fn create(&self, name: &str) -> SandboxResult<VolumeInfo> {
        let path = self.path(name)?;
        self.ensure_private()?;
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

    /// Check the mounts a new sandbox asks for, creating volumes where asked
    /// and missing; what its metadata keeps.
    pub fn specs(&self, mounts: &[VolumeMount], visible_root: &str) -> SandboxResult<Vec<MountSpec>> {
        if mounts.len() > MAX_VOLUMES {
            return Err(SandboxError::invalid_input(format!(
                "{} volumes asked for: a local sandbox mounts at most {MAX_VOLUMES}",
                mounts.len()
            )));
        }
        mounts
            .iter()
            .map(|mount| {
                let visible = normal_mount_path(&mount.volume, &mount.mount_path)?;
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
                let subpath = mount.subpath.as_deref().filter(|s| !s.is_empty());
                if let Some(subpath) = subpath
                    && !Path::new(subpath).components().all(|c| matches!(c, Component::Normal(_)))
                {
                    return Err(SandboxError::invalid_input(format!(
                        "volume {}: the subpath {subpath:?} must be relative, without '..'",
                        mount.volume
                    )));
                }
                Ok(MountSpec { volume: mount.volume.clone(), subpath: subpath.map(str::to_string), visible })
            })
            .collect::<SandboxResult<Vec<MountSpec>>>()
            .and_then(|specs| check_overlaps(specs, visible_root))
    }

    /// Open each mount's directory beneath its volume, creating the
    /// subpath's missing directories, following no symbolic link.
    pub fn open(&self, specs: &[MountSpec]) -> SandboxResult<Vec<Mounted>> {
        specs.iter().map(|spec| self.open_one(spec)).collect()
    }

    fn open_one(&self, spec: &MountSpec) -> SandboxResult<Mounted> {
        if spec.volume.is_empty() {
            return Err(SandboxError::invalid_input(format!(
                "the volume at {} was recorded by an older flue, by host path, which cannot be trusted: delete this \
                 sandbox and create a new one",
                spec.visible
            )));
        }
        check_name(&spec.volume)?;
        self.ensure_private()?;
        let fail = |what: &str, err: rustix::io::Errno| {
            let why = match err {
                rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => {
                    "it is (or passes through) a symbolic link; a subpath must be a real directory inside the volume"
                        .to_string()
                }
                rustix::io::Errno::NOTDIR => "it is not a directory".to_string(),
                rustix::io::Errno::NOENT => "it does not exist".to_string(),
                other => std::io::Error::from(other).to_string(),
            };
            SandboxError::invalid_input(format!("volume {}: cannot mount {what}: {why}", spec.volume))
        };
        let volumes = rustix::fs::open(&self.dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|err| {
                SandboxError::other(format!("cannot open the volumes directory {}: {err}", self.dir.display()))
            })?;
        let mut dir = open_dir_beneath(&volumes, &spec.volume).map_err(|err| match err {
            rustix::io::Errno::NOENT => SandboxError::not_found(format!("no local volume named {}", spec.volume)),
            other => fail("it", other),
        })?;
        if let Some(subpath) = spec.subpath.as_deref() {
            for (i, part) in subpath.split('/').filter(|p| !p.is_empty() && *p != ".").enumerate() {
                let so_far = subpath.split('/').filter(|p| !p.is_empty() && *p != ".").take(i + 1);
                let so_far = so_far.collect::<Vec<_>>().join("/");
                if part == ".." {
                    return Err(fail(&so_far, rustix::io::Errno::XDEV));
                }
                match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(err) => return Err(fail(&so_far, err)),
                }
                dir = open_dir_beneath(&dir, part).map_err(|err| fail(&so_far, err))?;
            }
        }
        let host = path_of(&dir);
        Ok(Mounted { visible: spec.visible.clone(), dir: Arc::new(dir), host })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(subpath: Option<&str>) -> MountSpec {
        MountSpec { volume: "v".into(), subpath: subpath.map(str::to_string), visible: "/data".into() }
    }

    #[test]
    fn mount_paths_that_hide_what_the_sandbox_needs_are_refused() {
        for path in ["/", "//", "/proc", "/proc/", "/./proc", "/dev/shm", "/run", "/run/flue", "/usr/lib", "/etc"] {
            assert!(normal_mount_path("v", path).is_err(), "{path} was accepted");
        }
        assert_eq!(normal_mount_path("v", "/data/").unwrap(), "/data");
        assert_eq!(normal_mount_path("v", "//workspace/./cache").unwrap(), "/workspace/cache");
        assert_eq!(normal_mount_path("v", "/procfs").unwrap(), "/procfs");
        assert!(normal_mount_path("v", "data").is_err());
        assert!(normal_mount_path("v", "/a/../proc").is_err());
        assert!(normal_mount_path("v", "/data\0--bind\0/\0/host").is_err());
    }

    #[test]
    fn mounts_may_not_nest_or_hide_the_sandbox() {
        let spec = |visible: &str| MountSpec { volume: "v".into(), subpath: None, visible: visible.into() };
        assert!(check_overlaps(vec![spec("/data"), spec("/data/x")], "/workspace").is_err());
        assert!(check_overlaps(vec![spec("/workspace/a/b"), spec("/workspace/a")], "/workspace").is_err());
        assert!(check_overlaps(vec![spec("/data"), spec("/data")], "/workspace").is_err());
        assert!(check_overlaps(vec![spec("/workspace")], "/workspace").is_err());
        assert!(check_overlaps(vec![spec("/home")], "/home/daytona").is_err());
        assert!(check_overlaps(vec![spec("/data"), spec("/datax"), spec("/workspace/data")], "/workspace").is_ok());
    }

    #[test]
    fn subpaths_never_follow_symbolic_links() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(data.path().join("volumes"));
        volumes.create("v").unwrap();
        let volume = data.path().join("volumes/v");
        std::os::unix::fs::symlink(outside.path(), volume.join("esc")).unwrap();
        std::fs::create_dir(volume.join("real")).unwrap();
        std::os::unix::fs::symlink("real", volume.join("inner")).unwrap();

        for subpath in ["esc", "esc/x", "inner", "inner/x", "real/../esc"] {
            let err = volumes.open(&[mount(Some(subpath))]).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidInput, "{subpath}: {err}");
        }
        assert!(!outside.path().join("x").exists(), "a directory was created through the link");
        let opened = volumes.open(&[mount(Some("real/a/b"))]).unwrap();
        assert!(volume.join("real/a/b").is_dir());
        assert_eq!(opened[0].host, volume.canonicalize().unwrap().join("real/a/b"));
        // The volume itself swapped for a link is refused too.
        std::fs::rename(&volume, data.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &volume).unwrap();
        assert!(volumes.open(&[mount(None)]).is_err());
    }
}
