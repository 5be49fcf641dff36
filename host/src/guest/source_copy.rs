//! The copy of an agent's workspace an isolated build works in.
//!
//! The build sees the copy where the original is, may change it (cargo
//! writes `Cargo.lock`, tools write caches), and never touches the
//! original. The copy is made afresh for every build — nothing a previous
//! build left in it survives — with the files' modification times, so that
//! cargo still rebuilds only what changed. Build outputs and dependencies
//! (`target/`, `node_modules/`, `__pycache__/`, `.git/`) are not copied, and
//! neither is anything but files, directories and symbolic links (copied as
//! links, never followed).
//!
//! Nor are the project's secrets and state, wherever the workspace is: no
//! `.env` file (`.env`, `.env.local`, `.envrc`…), no `.flue/` (the run
//! store), no `connectors/` at a project's root (its connectors and their
//! configuration), and none of the files this flue was given with `--env`
//! ([`never_copy`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files given to this process as configuration (`--env` files, the
/// project's `.env`), canonical: never copied into a build.
static NEVER_COPIED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Never copy `files` (configuration this flue read, which may hold
/// secrets) into a build.
pub(crate) fn never_copy<'a>(files: impl IntoIterator<Item = &'a Path>) {
    let mut never = NEVER_COPIED.lock().unwrap_or_else(|e| e.into_inner());
    for file in files {
        if let Ok(file) = file.canonicalize()
            && !never.contains(&file)
        {
            never.push(file);
        }
    }
}

/// The most files and directories a workspace may hold.
const MAX_ENTRIES: usize = 50_000;
/// The most bytes its files may hold together.
const MAX_BYTES: u64 = 1 << 30;

/// Replace `to` with a copy of the workspace `from`. A `Cargo.lock` that
/// only the previous copy had (cargo made it) is kept.
pub(crate) fn copy_workspace(from: &Path, to: &Path) -> Result<(), String> {
    let kept_lock = if from.join("Cargo.lock").exists() { None } else { read_lock(to) };
    if std::fs::symlink_metadata(to).is_ok() {
        std::fs::remove_dir_all(to).map_err(|err| format!("cannot clear {}: {err}", to.display()))?;
    }
    let mut budget = Budget { entries: 0, bytes: 0, root: from };
    copy_dir(from, to, &mut budget)?;
    if let Some(lock) = kept_lock {
        std::fs::write(to.join("Cargo.lock"), lock).map_err(|err| format!("{}: {err}", to.display()))?;
    }
    Ok(())
}

/// The lock file the previous build left in its copy `copy`, read beneath
/// the copy's parent (the build's directory) following no link out of it
/// — the build could have made the copy, or the lock file, a link to a host
/// file — and only if it is of a sane size.
fn read_lock(copy: &Path) -> Option<Vec<u8>> {
    const MAX_LOCK: u64 = 16 << 20;
    let work = crate::sandbox::local::ConfinedRoot::open(copy.parent()?).ok()?;
    work.read(&format!("{}/Cargo.lock", copy.file_name()?.to_str()?), MAX_LOCK).ok()
}

struct Budget<'a> {
    entries: usize,
    bytes: u64,
    root: &'a Path,
}

impl Budget<'_> {
    fn take(&mut self, bytes: u64) -> Result<(), String> {
        self.entries += 1;
        self.bytes += bytes;
        if self.entries > MAX_ENTRIES || self.bytes > MAX_BYTES {
            return Err(format!(
                "{} is too large to build in isolation (over {MAX_ENTRIES} files or {} GiB; target/, node_modules/ \
                 and .git/ do not count): flue copies the agent's workspace for each build, so keep data elsewhere",
                self.root.display(),
                MAX_BYTES >> 30
            ));
        }
        Ok(())
    }
}

/// Whether `name` in `dir` is a build output, a dependency tree, or the
/// project's secrets or state.
fn skipped(dir: &Path, name: &std::ffi::OsStr) -> bool {
    if NEVER_COPIED.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|file| *file == dir.join(name)) {
        return true;
    }
    match name.to_str() {
        Some(".git" | "node_modules" | "__pycache__" | ".flue") => true,
        Some(env) if env.starts_with(".env") => true,
        Some("connectors") => super::build::is_project_root(dir),
        // cargo's output sits beside a manifest; elsewhere `target` may be source.
        Some("target") => {
            dir.join("Cargo.toml").exists() || dir.join("app.py").exists() || dir.join("agent.js").exists()
        }
        _ => false,
    }
}

fn copy_dir(from: &Path, to: &Path, budget: &mut Budget<'_>) -> Result<(), String> {
    let fail = |path: &Path, err: std::io::Error| format!("cannot copy {}: {err}", path.display());
    std::fs::create_dir(to).map_err(|err| fail(to, err))?;
    let mut entries: Vec<(PathBuf, std::ffi::OsString)> = Vec::new();
    for entry in std::fs::read_dir(from).map_err(|err| fail(from, err))? {
        let entry = entry.map_err(|err| fail(from, err))?;
        entries.push((entry.path(), entry.file_name()));
    }
    for (source, name) in entries {
        if skipped(from, &name) {
            continue;
        }
        let target = to.join(&name);
        let meta = std::fs::symlink_metadata(&source).map_err(|err| fail(&source, err))?;
        if meta.file_type().is_symlink() {
            budget.take(0)?;
            let link = std::fs::read_link(&source).map_err(|err| fail(&source, err))?;
            std::os::unix::fs::symlink(link, &target).map_err(|err| fail(&target, err))?;
        } else if meta.is_dir() {
            budget.take(0)?;
            copy_dir(&source, &target, budget)?;
            keep_mtime(&target, &meta);
        } else if meta.is_file() {
            budget.take(meta.len())?;
            std::fs::copy(&source, &target).map_err(|err| fail(&source, err))?;
            // No set-id bits, nothing writable by others.
            let mode = meta.permissions().mode() & 0o755;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|err| fail(&target, err))?;
            keep_mtime(&target, &meta);
        }
    }
    Ok(())
}

/// Give `copy` the original's modification time (cargo compares them).
fn keep_mtime(copy: &Path, original: &std::fs::Metadata) {
    if let Ok(modified) = original.modified()
        && let Ok(file) = std::fs::File::open(copy)
    {
        let _ = file.set_modified(modified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_skips_outputs_keeps_times_and_forgets_what_a_build_left() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::create_dir_all(from.join("src")).unwrap();
        std::fs::create_dir_all(from.join("target/release")).unwrap();
        std::fs::write(from.join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(from.join("src/lib.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        copy_workspace(&from, &to).unwrap();
        assert!(to.join("src/lib.rs").is_file() && !to.join("target").exists());
        assert_eq!(std::fs::read_link(to.join("link")).unwrap(), Path::new("/etc/passwd"));
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(mtime(&to.join("src/lib.rs")), mtime(&from.join("src/lib.rs")));

        // What a build planted is gone; the lock file cargo made is kept.
        std::fs::write(to.join("src/planted.rs"), "").unwrap();
        std::fs::write(to.join("Cargo.lock"), "# made by cargo").unwrap();
        copy_workspace(&from, &to).unwrap();
        assert!(!to.join("src/planted.rs").exists());
        assert_eq!(std::fs::read_to_string(to.join("Cargo.lock")).unwrap(), "# made by cargo");
        // A lock file turned into a link to a host file is not read.
        std::fs::remove_file(to.join("Cargo.lock")).unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), to.join("Cargo.lock")).unwrap();
        copy_workspace(&from, &to).unwrap();
        assert!(!to.join("Cargo.lock").exists());
        // Nor is one read through a copy made a link to a host directory.
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("Cargo.lock"), "host file").unwrap();
        std::fs::remove_dir_all(&to).unwrap();
        std::os::unix::fs::symlink(&host, &to).unwrap();
        assert_eq!(read_lock(&to), None);
    }

    #[test]
    fn the_projects_secrets_and_state_are_never_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("project"), dir.path().join("copy"));
        for sub in ["agents/a/src/connectors", "connectors", ".flue", "config"] {
            std::fs::create_dir_all(from.join(sub)).unwrap();
        }
        std::fs::write(from.join("flue.toml"), "").unwrap();
        for file in [".env", ".env.local", ".envrc", "agents/a/.env", ".flue/runs.sqlite", "connectors/x.wasm"] {
            std::fs::write(from.join(file), "secret").unwrap();
        }
        std::fs::write(from.join("agents/a/src/connectors/mod.rs"), "").unwrap();
        std::fs::write(from.join("config/daytona.conf"), "DAYTONA_API_KEY=secret").unwrap();
        never_copy([from.join("config/daytona.conf").as_path()]);
        copy_workspace(&from, &to).unwrap();
        for gone in [".env", ".env.local", ".envrc", "agents/a/.env", ".flue", "connectors", "config/daytona.conf"] {
            assert!(std::fs::symlink_metadata(to.join(gone)).is_err(), "{gone} was copied");
        }
        // Source that merely shares a name is copied.
        assert!(to.join("agents/a/src/connectors/mod.rs").is_file());
        assert!(to.join("flue.toml").is_file());
    }
}
