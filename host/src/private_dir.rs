//! Directories only this user may change. flue keeps in them what it later
//! trusts — sandboxes, volumes, compiled machine code, installed
//! toolchains, the run store — so each is checked before use: a real
//! directory (not a symbolic link), owned by this user, writable by nobody
//! else. flue creates them so (mode `0700`), and refuses, with the reason,
//! one that is not: someone else who could write there could swap what flue
//! runs or reads. Callers add what the directory is for, and what to do.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Why a directory (or a file in one) is not this user's alone.
#[derive(Debug, thiserror::Error)]
pub enum NotPrivate {
    /// A symbolic link, which could lead anywhere.
    #[error("it is a symbolic link")]
    Symlink,
    /// Not a directory.
    #[error("it is not a directory")]
    NotADirectory,
    /// Someone else's.
    #[error("it belongs to uid {owner}, not to you (uid {me})")]
    Owner {
        /// Its owner.
        owner: u32,
        /// This process's user.
        me: u32,
    },
    /// Group or others may write to it.
    #[error("others can write to it (mode {mode:o})")]
    Writable {
        /// Its permission bits.
        mode: u32,
    },
    /// It could not be created, inspected or made private.
    #[error("cannot {action} it: {source}")]
    Io {
        /// What was tried.
        action: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Whether `meta` belongs to this user.
pub fn check_owner(meta: &std::fs::Metadata) -> Result<(), NotPrivate> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() == me { Ok(()) } else { Err(NotPrivate::Owner { owner: meta.uid(), me }) }
}

/// Whether `meta` belongs to this user and nobody else may write to it.
pub fn check_owner_and_mode(meta: &std::fs::Metadata) -> Result<(), NotPrivate> {
    check_owner(meta)?;
    if meta.mode() & 0o022 != 0 {
        return Err(NotPrivate::Writable { mode: meta.mode() & 0o777 });
    }
    Ok(())
}

/// Whether the existing `dir` is a real directory of this user's alone.
pub fn check_dir(dir: &Path) -> Result<(), NotPrivate> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| NotPrivate::Io { action: "inspect", source })?;
    if meta.file_type().is_symlink() {
        return Err(NotPrivate::Symlink);
    }
    if !meta.is_dir() {
        return Err(NotPrivate::NotADirectory);
    }
    check_owner_and_mode(&meta)
}

/// Create `dir` (mode `0700`, its missing parents as usual), or check the
/// existing one. With `tighten`, an existing one of ours that others can
/// read is made `0700` (a directory flue owns, made by an older version);
/// without, it is left as the user made it.
pub fn ensure_dir(dir: &Path, tighten: bool) -> Result<(), NotPrivate> {
    match std::fs::symlink_metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| NotPrivate::Io { action: "create", source })?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => check_dir(dir),
                // Created meanwhile: check what is there now.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => check_dir(dir),
                Err(source) => Err(NotPrivate::Io { action: "create", source }),
            }
        }
        Err(source) => Err(NotPrivate::Io { action: "inspect", source }),
        Ok(meta) => {
            check_dir(dir)?;
            if tighten && meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|source| NotPrivate::Io { action: "make private", source })?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_directory_of_ours_that_nobody_else_can_write_passes() {
        let base = tempfile::tempdir().unwrap();
        let made = base.path().join("a/b");
        ensure_dir(&made, false).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o700);

        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(ensure_dir(&open, true), Err(NotPrivate::Writable { mode: 0o777 })));

        let readable = base.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&readable, true).unwrap();
        assert_eq!(std::fs::metadata(&readable).unwrap().mode() & 0o777, 0o700);

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert!(matches!(ensure_dir(&link, false), Err(NotPrivate::Symlink)));
        std::fs::write(base.path().join("file"), "").unwrap();
        assert!(matches!(check_dir(&base.path().join("file")), Err(NotPrivate::NotADirectory)));
    }
}
