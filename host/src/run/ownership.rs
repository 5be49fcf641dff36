//! Labels that mark a sandbox as created by a flue run, and telling from
//! them whether that run is still alive — so that `flue sandboxes gc` can
//! find what a crashed or killed run left behind, and never anything else.
//!
//! Every sandbox a run creates carries `flue.created-by=flue`, `flue.run`,
//! `flue.agent`, `flue.keep`, and the run's process: `flue.host` (this
//! machine's name, for people), `flue.machine` (a digest of
//! `/etc/machine-id`) and `flue.process` (`<pid>-<start time>-<boot id>-<pid
//! namespace>`).
//!
//! Host names repeat across machines, and so do machine ids (cloned images,
//! containers); a boot id is random and never repeats. So a run is proven
//! gone only when its boot is this machine's: the current boot with no
//! process of that pid and start time, or an earlier boot of this machine,
//! which flue records in its data directory (`boots`) whenever a run labels
//! a sandbox. A sandbox of any other boot may be another machine's live run
//! and is never collected. Labels use only `[A-Za-z0-9._-]`, which every
//! provider accepts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// Set on every sandbox a flue run creates.
pub const CREATED_BY: &str = "flue.created-by";
/// The run's id.
pub const RUN: &str = "flue.run";
/// The agent the run ran.
pub const AGENT: &str = "flue.agent";
/// `true` when the sandbox is meant to outlive its run.
pub const KEEP: &str = "flue.keep";
/// The machine the run ran on, by name (shown to people, never trusted).
pub const HOST: &str = "flue.host";
/// The machine the run ran on: a digest of its machine id.
pub const MACHINE: &str = "flue.machine";
/// The run's process on that machine.
pub const PROCESS: &str = "flue.process";

/// On a sandbox that belongs to an agent and invocation id (`sandbox-per-id`):
/// a digest of both, so that any id, whatever its characters, names one
/// sandbox.
pub const FOR_ID: &str = "flue.for-id";
/// The invocation id of such a sandbox, as far as label characters allow
/// (for people; [`FOR_ID`] is what finds it).
pub const ID: &str = "flue.id";
/// The label an agent puts on a `create` to ask for its invocation id's
/// sandbox (value `true`): the one created for the id before, reconnected,
/// else a new one kept for the id. Never kept on the sandbox itself.
pub const KEEP_FOR_ID: &str = "flue.keep-for-id";

/// The [`FOR_ID`] label of `agent`'s sandbox for invocation id `id`.
pub fn for_id(agent: &str, id: &str) -> (String, String) {
    let digest = Sha256::new().chain_update(agent).chain_update([0]).chain_update(id).finalize();
    let hex: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
    (FOR_ID.into(), hex)
}

/// Boots remembered in the `boots` file (the newest).
const MAX_RECORDED_BOOTS: usize = 256;

/// Only the characters label values may hold.
pub(crate) fn label_safe(text: &str) -> String {
    let safe: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    safe.chars().take(63).collect()
}

/// This machine's name, as labels carry it.
pub fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "unknown".into());
    label_safe(name.trim())
}

/// This machine's id as labels carry it: a digest, so that the id itself
/// (which systemd asks not to expose) never leaves the machine. Empty when
/// the machine has none.
pub fn this_machine() -> String {
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok().filter(|id| !id.trim().is_empty()));
    match id {
        Some(id) => hex::encode(&Sha256::digest(format!("flue.machine:{}", id.trim()))[..12]),
        None => String::new(),
    }
}

/// This boot's id (32 hex digits).
fn boot_id() -> String {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    id.trim().replace('-', "").chars().filter(char::is_ascii_hexdigit).take(32).collect()
}

/// Where this machine's earlier boots are recorded.
fn boots_file() -> PathBuf {
    crate::sandbox::local::default_data_dir().join("boots")
}

/// The boots recorded on this machine, with the machine each ran on.
fn recorded_boots() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(boots_file()).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(machine, boot)| (machine.to_string(), boot.to_string()))
        .collect()
}

/// Record this boot (once), so that a later boot can prove this one's
/// runs gone. Best effort: without the record, their sandboxes are only
/// never collected.
fn record_this_boot() {
    let (machine, boot) = (this_machine(), boot_id());
    if boot.is_empty() {
        return;
    }
    let mut boots = recorded_boots();
    if boots.iter().any(|(m, b)| *m == machine && *b == boot) {
        return;
    }
    boots.push((machine, boot));
    let keep = boots.len().saturating_sub(MAX_RECORDED_BOOTS);
    let text: String = boots[keep..].iter().map(|(m, b)| format!("{m} {b}\n")).collect();
    let file = boots_file();
    // Only in a data directory that is ours alone: whoever else could write
    // there could decide which sandboxes gc takes for orphans.
    let private = file.parent().is_some_and(|dir| {
        crate::sandbox::local::ensure_private_dir(dir, "keep flue's data", "set FLUE_DATA_DIR").is_ok()
    });
    if !private {
        return;
    }
    let temp = file.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    // A new file (never one planted there), written whole, then renamed.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if written.and_then(|()| std::fs::rename(&temp, &file)).is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// A process's start time (clock ticks since boot), from `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(19)?.parse().ok()
}

/// This process's pid namespace (its inode): containers on one kernel share
/// its boot id, and a pid means something only in its own namespace.
fn pid_namespace() -> String {
    let link = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    link.to_string_lossy().chars().filter(char::is_ascii_digit).collect()
}

/// This process, as `flue.process` names it (and the run store's owner
/// of a run): pid, start time, boot and pid namespace.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!("{pid}-{}-{}-{}", start_time(pid).unwrap_or(0), boot_id(), pid_namespace())
}

/// Who runs a run, as the run store records it: this machine and this
/// process ([`this_process`]).
pub fn run_owner() -> String {
    format!("{}/{}", machine_or_host(), this_process())
}

/// This machine's id, or where it has none, its name.
fn machine_or_host() -> String {
    let machine = this_machine();
    if machine.is_empty() { format!("host.{}", this_host()) } else { machine }
}

/// Whether the process [`run_owner`] named `owner` is provably gone: it ran
/// on this machine in an earlier boot, or in this boot and pid namespace
/// its pid is another process now (or none). What flue cannot tell —
/// another machine, another pid namespace, an unreadable boot id — is not
/// gone.
pub fn run_owner_gone(owner: &str) -> bool {
    let Some((machine, process)) = owner.split_once('/') else { return false };
    if machine != machine_or_host() {
        return false;
    }
    let mut parts = process.splitn(4, '-');
    let (pid, started, boot, namespace) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(started), Some(boot), Some(namespace)) = (
        pid.and_then(|p| p.parse::<u32>().ok()),
        started.and_then(|s| s.parse::<u64>().ok()).filter(|&s| s > 0),
        boot.filter(|b| b.len() == 32),
        namespace.filter(|n| !n.is_empty()),
    ) else {
        return false;
    };
    let (our_boot, our_namespace) = (boot_id(), pid_namespace());
    if our_boot.len() != 32 || our_namespace.is_empty() {
        return false;
    }
    if boot != our_boot {
        return true;
    }
    namespace == our_namespace && start_time(pid) != Some(started)
}

/// The labels of a sandbox that run `run_id` of `agent` creates.
pub fn labels(run_id: &str, agent: &str, keep: bool) -> Vec<(String, String)> {
    record_this_boot();
    vec![
        (CREATED_BY.into(), "flue".into()),
        (RUN.into(), label_safe(run_id)),
        (AGENT.into(), label_safe(agent)),
        (KEEP.into(), keep.to_string()),
        (HOST.into(), this_host()),
        (MACHINE.into(), this_machine()),
        (PROCESS.into(), this_process()),
    ]
}

/// Where flue runs now: what a sandbox's labels are compared with.
struct Here {
    machine: String,
    boot: String,
    pid_namespace: String,
}

/// Who a sandbox belongs to, as its labels tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Not created by a flue run.
    NotFlue,
    /// Created to be kept: never collected.
    Kept,
    /// Its run is still going.
    Running,
    /// Its run is gone and it was not meant to be kept: garbage.
    Orphaned,
    /// Its run ran on another machine, whose processes flue cannot see.
    OtherHost(String),
    /// Its run may be alive elsewhere: a boot this machine has no record of
    /// (another machine of the same name or image, or labels too old to
    /// tell). Never collected; `flue sandboxes rm` deletes it by id.
    Unproven(String),
}

impl Owner {
    /// Classify a sandbox by its labels.
    pub fn of(labels: &[(String, String)]) -> Owner {
        let here = Here { machine: this_machine(), boot: boot_id(), pid_namespace: pid_namespace() };
        Owner::classify(labels, &here, &recorded_boots())
    }

    fn classify(labels: &[(String, String)], here: &Here, recorded: &[(String, String)]) -> Owner {
        let Here { machine, boot, pid_namespace } = here;
        let get = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        if get(CREATED_BY) != Some("flue") {
            return Owner::NotFlue;
        }
        if get(KEEP) == Some("true") {
            return Owner::Kept;
        }
        let host = get(HOST).unwrap_or("an unknown machine").to_string();
        match get(MACHINE) {
            Some(theirs) if theirs != machine => return Owner::OtherHost(host),
            Some(_) => {}
            None => return Owner::Unproven(host),
        }
        let mut parts = get(PROCESS).unwrap_or("").splitn(4, '-');
        let (pid, started, their_boot, their_namespace) =
            (parts.next(), parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let pid = pid.and_then(|p| p.parse::<u32>().ok());
        let started = started.and_then(|s| s.parse::<u64>().ok());
        if their_boot.len() != 32 {
            return Owner::Unproven(host);
        }
        if their_boot == boot {
            if their_namespace.is_empty() || their_namespace != pid_namespace {
                // Another container on this kernel: its pids are not ours
                // to look up.
                return Owner::Unproven(host);
            }
            let alive = matches!((pid, started), (Some(pid), Some(started)) if start_time(pid) == Some(started));
            return if alive { Owner::Running } else { Owner::Orphaned };
        }
        if recorded.iter().any(|(m, b)| m == machine && b == their_boot) {
            // An earlier boot of this machine: everything it ran is gone.
            return Owner::Orphaned;
        }
        Owner::Unproven(host)
    }

    /// A word for listings.
    pub fn describe(&self) -> String {
        match self {
            Owner::NotFlue => "not flue's".into(),
            Owner::Kept => "kept".into(),
            Owner::Running => "run active".into(),
            Owner::Orphaned => "orphaned".into(),
            Owner::OtherHost(host) => format!("run on {host}"),
            Owner::Unproven(host) => format!("run on {host}? (a boot this machine has no record of; never collected)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(labels: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
        let mut labels = labels.to_vec();
        labels.retain(|(k, _)| k != key);
        labels.push((key.into(), value.into()));
        labels
    }

    #[test]
    fn a_run_owner_is_gone_only_when_provably_so() {
        assert!(!run_owner_gone(&run_owner()), "this process is alive");
        let (machine, pid) = (machine_or_host(), std::process::id());
        let (boot, namespace) = (boot_id(), pid_namespace());
        if boot.len() != 32 {
            return; // this machine cannot tell (no boot id)
        }
        assert!(run_owner_gone(&format!("{machine}/{pid}-1-{boot}-{namespace}")), "another start time: pid reused");
        let other_boot = "0".repeat(32);
        assert!(run_owner_gone(&format!("{machine}/{pid}-1-{other_boot}-{namespace}")), "an earlier boot");
        assert!(!run_owner_gone(&format!("{machine}/{pid}-1-{boot}-1")), "another pid namespace cannot be seen");
        assert!(!run_owner_gone(&format!("elsewhere/{pid}-1-{other_boot}-{namespace}")), "another machine");
        assert!(!run_owner_gone(&format!("{machine}/{pid}-0-{other_boot}-{namespace}")), "no start time");
        assert!(!run_owner_gone("nonsense"));
    }

    #[test]
    fn an_id_sandbox_label_tells_agents_and_ids_apart_whatever_their_characters() {
        let (key, value) = for_id("triage", "org/repo#12");
        assert_eq!((key.as_str(), value.len()), (FOR_ID, 32));
        assert!(value.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(for_id("triage", "org/repo#12"), for_id("triage", "org/repo#12"));
        assert_ne!(for_id("triage", "org/repo#12"), for_id("triage", "org-repo-12"));
        assert_ne!(for_id("a", "bc"), for_id("ab", "c"));
    }

    #[test]
    fn labels_tell_a_live_run_from_a_gone_one() {
        let mine = labels("run_1", "hello world/x", false);
        assert_eq!(Owner::of(&mine), Owner::Running);
        assert!(mine.iter().all(|(_, v)| v.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))));
        // pid 1 exists, but did not start at tick 1.
        let gone = with(&mine, PROCESS, &format!("1-1-{}-{}", boot_id(), pid_namespace()));
        assert_eq!(Owner::of(&gone), Owner::Orphaned);
        assert_eq!(Owner::of(&labels("run_1", "a", true)), Owner::Kept);
        let elsewhere = with(&with(&mine, HOST, "another-machine"), MACHINE, "0123456789abcdef01234567");
        assert_eq!(Owner::of(&elsewhere), Owner::OtherHost("another-machine".into()));
        assert_eq!(Owner::of(&[]), Owner::NotFlue);
    }

    #[test]
    fn a_machine_with_the_same_name_and_id_but_another_boot_is_never_collected() {
        let here = Here { machine: "m".repeat(24), boot: "a".repeat(32), pid_namespace: "4026531836".into() };
        let base = [
            (CREATED_BY.to_string(), "flue".to_string()),
            (HOST.to_string(), "twin".to_string()),
            (MACHINE.to_string(), here.machine.clone()),
        ];
        let twin = with(&base, PROCESS, &format!("1-1-{}-4026531836", "b".repeat(32)));
        // Same host name, same machine id, a boot this machine never had:
        // the twin's run may be alive.
        assert_eq!(Owner::classify(&twin, &here, &[]), Owner::Unproven("twin".into()));
        // An earlier boot this machine recorded: provably gone.
        let recorded = [(here.machine.clone(), "b".repeat(32))];
        assert_eq!(Owner::classify(&twin, &here, &recorded), Owner::Orphaned);
        // Recorded by another machine sharing the data directory: not ours.
        let theirs = [("n".repeat(24), "b".repeat(32))];
        assert_eq!(Owner::classify(&twin, &here, &theirs), Owner::Unproven("twin".into()));
        // Another container on this kernel (same boot, another pid
        // namespace), or labels from before pid namespaces: not provable.
        let container = with(&base, PROCESS, &format!("1-1-{}-4026532000", here.boot));
        assert_eq!(Owner::classify(&container, &here, &recorded), Owner::Unproven("twin".into()));
        let old = with(&base, PROCESS, &format!("1-1-{}", here.boot));
        assert_eq!(Owner::classify(&old, &here, &recorded), Owner::Unproven("twin".into()));
        // This container, a pid that is gone: an orphan.
        let gone = with(&base, PROCESS, &format!("1-1-{}-4026531836", here.boot));
        assert_eq!(Owner::classify(&gone, &here, &recorded), Owner::Orphaned);
        // Labels from before machine ids: cannot be proven gone.
        let no_machine = [
            (CREATED_BY.to_string(), "flue".to_string()),
            (HOST.to_string(), "twin".to_string()),
            (PROCESS.to_string(), format!("1-1-{}", &here.boot[..12])),
        ];
        assert_eq!(Owner::classify(&no_machine, &here, &recorded), Owner::Unproven("twin".into()));
    }
}
