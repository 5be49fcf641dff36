//! How the local sandbox isolates commands, and finding out whether
//! bubblewrap works here.
//!
//! Probing runs `bwrap` once (~5 ms). With `--isolation auto` it happens in
//! the background while the agent loads ([`IsolationSetting`]), and a
//! successful probe is remembered in the cache directory together with
//! everything that decides it (kernel boot, namespaces, user, the sysctls
//! that allow user namespaces, the `bwrap` binary): while none of those
//! changed, the next run does not probe again. A record can only ever say
//! "bubblewrap works"; if it turns out wrong, commands fail (they never run
//! unisolated), the record is dropped and the next run probes afresh.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::process::Command;

/// The probe record's file name in the cache directory.
const PROBE_RECORD: &str = "bwrap-probe";

/// The probe record this process trusted or wrote, if any.
static RECORD: OnceLock<PathBuf> = OnceLock::new();

/// How commands are isolated.
#[derive(Clone, Debug)]
pub enum Isolation {
    /// bubblewrap: read-only system, only the sandbox writable, fresh
    /// namespaces (no network unless allowed).
    Bubblewrap {
        /// The `bwrap` binary.
        bwrap: PathBuf,
        /// Share the host's network (`--allow-network`).
        allow_network: bool,
    },
    /// A plain child process in the sandbox directory.
    None,
}

impl Isolation {
    /// Whether commands run isolated.
    pub fn is_isolated(&self) -> bool {
        matches!(self, Isolation::Bubblewrap { .. })
    }
}

/// The isolation local sandboxes get: known, or still being found out in
/// the background (`--isolation auto`), so that probing bubblewrap overlaps
/// with loading the agent instead of delaying it.
#[derive(Clone, Debug)]
pub struct IsolationSetting {
    decided: tokio::sync::watch::Receiver<Option<Isolation>>,
}

impl From<Isolation> for IsolationSetting {
    fn from(isolation: Isolation) -> Self {
        IsolationSetting { decided: tokio::sync::watch::channel(Some(isolation)).1 }
    }
}

impl IsolationSetting {
    /// Bubblewrap if it works here, else none; found out in the background
    /// from now on (so it needs a tokio runtime), trusting a probe record in
    /// `cache_dir` when one matches.
    pub fn probe_in_background(allow_network: bool, cache_dir: Option<PathBuf>) -> Self {
        let (decide, decided) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            let isolation = match probe_remembered(cache_dir.as_deref()).await {
                Ok(bwrap) => Isolation::Bubblewrap { bwrap, allow_network },
                Err(reason) => {
                    tracing::debug!("no isolation for the local sandbox: {reason}");
                    Isolation::None
                }
            };
            let _ = decide.send(Some(isolation));
        });
        IsolationSetting { decided }
    }

    /// The isolation, once decided.
    pub async fn get(&self) -> Isolation {
        match self.decided.clone().wait_for(Option::is_some).await {
            Ok(decided) => decided.clone().unwrap_or(Isolation::None),
            // The probe died (the runtime is shutting down): nothing runs.
            Err(_) => Isolation::None,
        }
    }
}

/// Find a working bubblewrap: on the PATH and able to create namespaces
/// here. Meanwhile, prepare what every isolated command needs, so that the
/// first one does not wait for it.
pub async fn probe_bubblewrap() -> Result<PathBuf, String> {
    let bwrap = find_bwrap()?;
    let prepared = tokio::task::spawn_blocking(super::bwrap::prepare);
    let probed = probe(&bwrap).await;
    let _ = prepared.await;
    probed.map(|()| bwrap)
}

/// [`probe_bubblewrap`], skipped when `cache_dir` holds a record of a
/// successful probe under the same conditions; a new success is recorded.
async fn probe_remembered(cache_dir: Option<&Path>) -> Result<PathBuf, String> {
    let bwrap = find_bwrap()?;
    let record = cache_dir.map(|dir| dir.join(PROBE_RECORD));
    let conditions = conditions(&bwrap);
    if let (Some(record), Some(conditions)) = (&record, &conditions)
        && std::fs::read_to_string(record).is_ok_and(|recorded| recorded == *conditions)
    {
        let _ = RECORD.set(record.clone());
        let _ = tokio::task::spawn_blocking(super::bwrap::prepare).await;
        return Ok(bwrap);
    }
    let bwrap = probe_bubblewrap().await?;
    if let (Some(record), Some(conditions)) = (&record, &conditions) {
        match write_record(record, conditions) {
            Ok(()) => {
                let _ = RECORD.set(record.clone());
            }
            Err(err) => tracing::debug!("could not record the bubblewrap probe in {}: {err}", record.display()),
        }
    }
    Ok(bwrap)
}

/// Bubblewrap failed to set a sandbox up: a recorded probe is wrong, so
/// the next run probes again.
pub(crate) fn forget_probe() {
    if let Some(record) = RECORD.get() {
        let _ = std::fs::remove_file(record);
    }
}

fn find_bwrap() -> Result<PathBuf, String> {
    crate::which::find_on_path("bwrap").ok_or_else(|| "bubblewrap (bwrap) is not installed".into())
}

async fn probe(bwrap: &Path) -> Result<(), String> {
    let output = Command::new(bwrap)
        .args(["--unshare-all", "--ro-bind", "/", "/", "--", "true"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| format!("could not run {}: {err}", bwrap.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot create namespaces here: {}",
            bwrap.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Everything a probe's outcome depends on, as text; `None` when some of it
/// cannot be read (then nothing is recorded or trusted).
fn conditions(bwrap: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let mut text = format!("boot {}\nuid {}\n", boot.trim(), rustix::process::getuid().as_raw());
    for namespace in ["user", "mnt", "pid", "net", "cgroup"] {
        let link = std::fs::read_link(format!("/proc/self/ns/{namespace}")).ok()?;
        text.push_str(&format!("ns {}\n", link.display()));
    }
    for sysctl in [
        "/proc/sys/user/max_user_namespaces",
        "/proc/sys/kernel/unprivileged_userns_clone",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    ] {
        let value = std::fs::read_to_string(sysctl).unwrap_or_else(|_| "-".into());
        text.push_str(&format!("{sysctl} {}\n", value.trim()));
    }
    let binary = std::fs::metadata(bwrap).ok()?;
    text.push_str(&format!(
        "bwrap {} {} {} {}.{}\n",
        bwrap.display(),
        binary.ino(),
        binary.size(),
        binary.mtime(),
        binary.mtime_nsec()
    ));
    Some(text)
}

fn write_record(record: &Path, conditions: &str) -> std::io::Result<()> {
    let dir = record.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, conditions.as_bytes())?;
    file.persist(record).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_the_boot_the_namespaces_and_the_binary() {
        let Some(text) = conditions(Path::new("/bin/sh")) else { return };
        assert!(text.starts_with("boot "), "{text}");
        assert!(text.contains("ns user:["), "{text}");
        assert!(text.contains("bwrap /bin/sh "), "{text}");
        // Another binary is another condition.
        if let Some(other) = conditions(Path::new("/bin/ls")) {
            assert_ne!(text, other);
        }
    }
}
