//! Agent components read from disk once and kept while their file is
//! unchanged (same length, modification time and inode), so that a request
//! neither reads nor hashes its agent's component again. A rebuilt agent
//! (a new file, or the same one rewritten) is read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::runtime::ComponentBytes;

/// Components kept at once (past this, the memo starts over).
const MAX_KEPT: usize = 64;

/// What says a file is the one read before.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt as _;
        Stamp { len: meta.len(), modified: meta.modified().ok(), inode: meta.ino() }
    }
}

/// The components read so far, by path.
#[derive(Default)]
pub struct ComponentFiles {
    kept: Mutex<HashMap<PathBuf, (Stamp, ComponentBytes)>>,
}

impl ComponentFiles {
    /// The component at `path`: the one kept if the file did not change,
    /// else read (and hashed) now.
    pub async fn read(&self, path: &Path) -> std::io::Result<ComponentBytes> {
        let stamp = Stamp::of(&tokio::fs::metadata(path).await?);
        if let Some((kept, bytes)) = self.lock().get(path)
            && *kept == stamp
        {
            return Ok(bytes.clone());
        }
        let bytes = tokio::fs::read(path).await?;
        // Tens of MiB for an interpreter's agent: not on the runtime's threads.
        let component =
            tokio::task::spawn_blocking(move || ComponentBytes::new(bytes)).await.map_err(std::io::Error::other)?;
        // Stamped before the read: a file that changed during it is read
        // again next time.
        let mut kept = self.lock();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(path.to_path_buf(), (stamp, component.clone()));
        Ok(component)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Stamp, ComponentBytes)>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_component_is_read_once_until_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.wasm");
        std::fs::write(&path, b"first").unwrap();
        let files = ComponentFiles::default();
        let first = files.read(&path).await.unwrap();
        assert_eq!(first.bytes(), b"first");
        // Kept: the very same bytes, not read again.
        let again = files.read(&path).await.unwrap();
        assert!(std::ptr::eq(first.bytes(), again.bytes()));
        // Replaced (as a build does: a new file renamed over it).
        let next = dir.path().join("agent.wasm.new");
        std::fs::write(&next, b"second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let changed = files.read(&path).await.unwrap();
        assert_eq!(changed.bytes(), b"second");
        assert_ne!(changed.sha256(), first.sha256());
        std::fs::remove_file(&path).unwrap();
        assert!(files.read(&path).await.is_err(), "a removed component is not served from memory");
    }
}
