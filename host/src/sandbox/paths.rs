//! Sandbox path resolution, the one rule every backend sees paths through.
//!
//! As in Flue's session layer: relative paths resolve against the session's
//! working directory; `.` and empty segments drop; `..` pops a segment and is
//! clamped at `/`. The result is always absolute and normalised, so backends
//! never see `..`.

use crate::sandbox::error::{SandboxError, SandboxResult};

/// The longest path accepted (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Resolve `path` against the absolute directory `cwd`.
///
/// Fails only for input no backend could handle: an empty path or one with a
/// NUL byte.
pub fn resolve(cwd: &str, path: &str) -> SandboxResult<String> {
    if path.is_empty() {
        return Err(SandboxError::invalid_input("empty path"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(SandboxError::invalid_input(format!(
            "a path of {} bytes is longer than the {MAX_PATH_BYTES} bytes paths may have",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(SandboxError::invalid_input(format!("path {path:?} contains a NUL byte")));
    }
    let mut segments: Vec<&str> = Vec::new();
    let joined_cwd = if path.starts_with('/') { "" } else { cwd };
    for segment in joined_cwd.split('/').chain(path.split('/')) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// Split an absolute, normalised path into its parent and final name.
/// `/` has no parent.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let at = trimmed.rfind('/')?;
    let name = &trimmed[at + 1..];
    if name.is_empty() {
        return None;
    }
    let parent = if at == 0 { "/" } else { &trimmed[..at] };
    Some((parent, name))
}

/// If `path` is `root` or lies under it, the part after `root` (`""` for the
/// root itself). Both must be normalised absolute paths.
pub fn strip_root<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    if root == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() { Some("") } else { rest.strip_prefix('/') }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_table() {
        let cases = [
            ("/workspace", "a.txt", "/workspace/a.txt"),
            ("/workspace", "./a.txt", "/workspace/a.txt"),
            ("/workspace", "dir//a.txt", "/workspace/dir/a.txt"),
            ("/workspace", "dir/./b/../a.txt", "/workspace/dir/a.txt"),
            ("/workspace", "..", "/"),
            ("/workspace", "../../../../etc", "/etc"),
            ("/workspace", "/abs/path", "/abs/path"),
            ("/workspace", "/../x", "/x"),
            ("/workspace", ".", "/workspace"),
            ("/workspace/", "a/", "/workspace/a"),
            ("/", "..", "/"),
            ("/workspace", "naïve/日本.txt", "/workspace/naïve/日本.txt"),
        ];
        for (cwd, path, want) in cases {
            assert_eq!(resolve(cwd, path).unwrap(), want, "resolve({cwd:?}, {path:?})");
        }
    }

    #[test]
    fn empty_and_nul_paths_are_invalid_input() {
        assert!(resolve("/w", "").is_err());
        assert!(resolve("/w", "a\0b").is_err());
        assert!(resolve("/w", &"x".repeat(MAX_PATH_BYTES + 1)).is_err());
    }

    #[test]
    fn split_parent_handles_root_children() {
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/a/b/c"), Some(("/a/b", "c")));
        assert_eq!(split_parent("/"), None);
    }

    #[test]
    fn strip_root_requires_a_segment_boundary() {
        assert_eq!(strip_root("/workspace", "/workspace"), Some(""));
        assert_eq!(strip_root("/workspace", "/workspace/a/b"), Some("a/b"));
        assert_eq!(strip_root("/workspace", "/workspace2/a"), None);
        assert_eq!(strip_root("/workspace", "/etc"), None);
        assert_eq!(strip_root("/", "/etc"), Some("etc"));
    }
}
