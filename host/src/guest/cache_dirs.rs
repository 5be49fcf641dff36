//! flue's own directories for building agents — installed toolchains,
//! builds, built components — checked as the compiled-component cache
//! (`runtime::cache`) is before anything in them is run.
//!
//! A directory flue runs code from must be one only this user can change:
//! a real directory (not a symbolic link), owned by this user, writable by
//! nobody else. flue creates them so (mode `0700`) and refuses, with the
//! reason, one that is not: it never runs a tool that someone else could
//! have planted. An installed toolchain is also checked against what was
//! installed ([`tree_digest`]): every file, its size and time.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::runtime::cache::ComponentCache;

/// flue's cache directory, created private when missing and refused when
/// it is not ours alone.
pub(crate) fn cache_root() -> Result<PathBuf, String> {
    let root = ComponentCache::default_dir().ok_or("no cache directory: set FLUE_CACHE_DIR or HOME")?;
    ensure_private(&root)?;
    Ok(root)
}

/// `parent/name`, created private when missing, and checked.
pub(crate) fn private_subdir(parent: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = parent.join(name);
    ensure_private(&dir)?;
    Ok(dir)
}

/// `dir` created private, or checked to be ours alone; the reason (with
/// what to do) when it is not.
fn ensure_private(dir: &Path) -> Result<(), String> {
    crate::private_dir::ensure_dir(dir, false).map_err(|why| refusal(dir, &why))
}

/// Whether `dir` is a directory only this user can change; the reason
/// (with what to do) when it is not.
pub(crate) fn check_private(dir: &Path) -> Result<(), String> {
    crate::private_dir::check_dir(dir).map_err(|why| refusal(dir, &why))
}

fn refusal(dir: &Path, why: &crate::private_dir::NotPrivate) -> String {
    format!(
        "refusing to use {}: {why}. flue runs tools from its cache, so it must be yours alone: remove it, or set \
         FLUE_CACHE_DIR to a directory only you can write to",
        dir.display()
    )
}

/// A lock file in a private directory, opened without following a
/// symbolic link, and held exclusively until dropped.
pub(crate) fn lock(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|err| format!("cannot lock {}: {err}", path.display()))?;
    Ok(file)
}

/// The most entries an installed toolchain may hold.
const MAX_TREE_ENTRIES: usize = 200_000;

/// A digest of everything under `dir` but `skip` (a top-level name): each
/// entry's path and kind, a file's size, modification time and mode, a
/// symbolic link's target, in order. Fails when an entry is not this user's alone (see
/// [`check_private`]), is neither file, directory nor link, or a link
/// points outside `dir`.
pub(crate) fn tree_digest(dir: &Path, skip: &str) -> Result<String, String> {
    let me = rustix::process::geteuid().as_raw();
    let mut hasher = Sha256::new();
    let mut entries = 0usize;
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&relative))
            .map_err(|err| format!("cannot read {}: {err}", dir.join(&relative).display()))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|err| format!("cannot read {}: {err}", dir.join(&relative).display()))?;
        names.sort();
        // Directories are pushed in reverse so that they pop in order.
        let mut subdirs = Vec::new();
        for name in names {
            if relative.as_os_str().is_empty() && name == skip {
                continue;
            }
            entries += 1;
            if entries > MAX_TREE_ENTRIES {
                return Err(format!("{} holds more than {MAX_TREE_ENTRIES} entries", dir.display()));
            }
            let path = relative.join(&name);
            let full = dir.join(&path);
            let meta = std::fs::symlink_metadata(&full).map_err(|err| format!("{}: {err}", full.display()))?;
            if meta.uid() != me || (!meta.file_type().is_symlink() && meta.mode() & 0o022 != 0) {
                return Err(format!(
                    "{} is not yours alone (uid {}, mode {:o})",
                    full.display(),
                    meta.uid(),
                    meta.mode()
                ));
            }
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            if meta.is_dir() {
                hasher.update(b"d");
                subdirs.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&full).map_err(|err| format!("{}: {err}", full.display()))?;
                // Relative links may climb with `..`: resolve them lexically.
                let resolved = normalize(&full.parent().unwrap_or(dir).join(&target));
                if target.is_absolute() || !resolved.starts_with(normalize(dir)) {
                    return Err(format!("{} points outside {}", full.display(), dir.display()));
                }
                hasher.update(b"l");
                hasher.update(target.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                // Size and modification time, not content: reading a 400 MB
                // toolchain on every build would cost seconds, and what this
                // guards against (a planted or half-written file) changes
                // them; only this user can write here (checked above).
                hasher.update(b"f");
                hasher.update(meta.len().to_le_bytes());
                hasher.update(meta.mtime().to_le_bytes());
                hasher.update(meta.mtime_nsec().to_le_bytes());
                hasher.update((meta.mode() & 0o7777).to_le_bytes());
            } else {
                return Err(format!("{} is not a file, directory or link", full.display()));
            }
            hasher.update([0]);
        }
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `path` with `.` and `..` resolved lexically (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Take away group and world write permission from everything under `dir`
/// (an install made under a permissive umask), so that [`tree_digest`]
/// accepts it.
pub(crate) fn make_private(dir: &Path) -> std::io::Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let meta = std::fs::symlink_metadata(&current)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.mode() & 0o022 != 0 {
            std::fs::set_permissions(&current, std::fs::Permissions::from_mode(meta.mode() & 0o7755))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&current)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_private(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private(dir.path()).unwrap_err();
        assert!(err.contains("others can write to it (mode 777)"), "{err}");
        let link = dir.path().with_extension("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(check_private(&link).unwrap_err().contains("symbolic link"));
        std::fs::remove_file(link).unwrap();
    }

    #[test]
    fn the_digest_follows_the_files_and_refuses_links_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/tool"), "one").unwrap();
        std::os::unix::fs::symlink("../bin/tool", dir.path().join("bin/alias")).unwrap();
        std::fs::write(dir.path().join(".installed"), "ignored").unwrap();
        make_private(dir.path()).unwrap();
        let first = tree_digest(dir.path(), ".installed").unwrap();
        std::fs::write(dir.path().join(".installed"), "changed").unwrap();
        assert_eq!(tree_digest(dir.path(), ".installed").unwrap(), first);
        std::fs::write(dir.path().join("bin/tool"), "two, longer").unwrap();
        assert_ne!(tree_digest(dir.path(), ".installed").unwrap(), first);
        std::os::unix::fs::symlink("../../../etc/passwd", dir.path().join("bin/out")).unwrap();
        assert!(tree_digest(dir.path(), ".installed").unwrap_err().contains("points outside"));
    }
}
