//! Finding programs on the `PATH`.
//!
//! Only absolute `PATH` entries count: a relative one (`./node_modules/.bin`,
//! or the empty entry, which means the current directory) names whatever
//! directory flue happens to run in — often a repository someone else
//! wrote — and a `bwrap`, `cargo` or `python3` planted there would run on
//! this machine, unsandboxed.

use std::path::PathBuf;

/// The first `name` on the `PATH` that is an executable file, as an absolute
/// path: its directory canonical, its own name kept (rustup's proxies are
/// links to one binary that acts on the name it was started by).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    find_in(&path, name)
}

/// [`find_on_path`] in the search path `path`.
fn find_in(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .filter_map(|dir| dir.canonicalize().ok())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn relative_and_empty_entries_are_never_searched() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("bin/tool");
        std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cwd = std::env::current_dir().unwrap();
        // Relative to wherever the test runs: these never resolve to `tool`.
        let relative = pathdiff(dir.path(), &cwd).join("bin");
        let path = std::env::join_paths([relative.as_os_str(), "".as_ref(), ".".as_ref()]).unwrap();
        assert_eq!(find_in(&path, "tool"), None);
        let path = std::env::join_paths([dir.path().join("bin")]).unwrap();
        assert_eq!(find_in(&path, "tool"), Some(dir.path().canonicalize().unwrap().join("bin/tool")));
        assert_eq!(find_in(&path, "../bin/tool"), None);
    }

    /// `to` relative to `from` (both absolute), with `..` as needed.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let ups = from.components().count() - 1;
        let mut relative: PathBuf = std::iter::repeat_n("..", ups).collect();
        relative.push(to.strip_prefix("/").unwrap());
        relative
    }
}
