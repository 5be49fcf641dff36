//! Labels that mark a sandbox as created by a flue run, and telling from
//! them whether that run is still alive — so that `flue sandboxes gc` can
//! find what a crashed or killed run left behind.
//!
//! Every sandbox a run creates carries `flue.created-by=flue`, `flue.run`,
//! `flue.agent`, `flue.keep`, and the run's process: `flue.host` (this
//! machine's name) and `flue.process` (`<pid>-<start time>-<boot id>`). A run
//! is gone when, on this machine, that process no longer exists (a pid that
//! was reused has another start time; a reboot changes the boot id). Labels
//! use only `[A-Za-z0-9._-]`, which every provider accepts.

/// Set on every sandbox a flue run creates.
pub const CREATED_BY: &str = "flue.created-by";
/// The run's id.
pub const RUN: &str = "flue.run";
/// The agent the run ran.
pub const AGENT: &str = "flue.agent";
/// `true` when the sandbox is meant to outlive its run.
pub const KEEP: &str = "flue.keep";
/// The machine the run ran on.
pub const HOST: &str = "flue.host";
/// The run's process on that machine.
pub const PROCESS: &str = "flue.process";

/// Only the characters label values may hold.
fn label_safe(text: &str) -> String {
    let safe: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    safe.chars().take(63).collect()
}

/// This machine's name, as labels carry it.
pub fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "unknown".into());
    label_safe(name.trim())
}

/// The first 12 hex digits of this boot's id.
fn boot_id() -> String {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    id.trim().replace('-', "").chars().take(12).collect()
}

/// A process's start time (clock ticks since boot), from `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(19)?.parse().ok()
}

/// This process, as `flue.process` names it.
fn this_process() -> String {
    let pid = std::process::id();
    format!("{pid}-{}-{}", start_time(pid).unwrap_or(0), boot_id())
}

/// The labels of a sandbox that run `run_id` of `agent` creates.
pub fn labels(run_id: &str, agent: &str, keep: bool) -> Vec<(String, String)> {
    vec![
        (CREATED_BY.into(), "flue".into()),
        (RUN.into(), label_safe(run_id)),
        (AGENT.into(), label_safe(agent)),
        (KEEP.into(), keep.to_string()),
        (HOST.into(), this_host()),
        (PROCESS.into(), this_process()),
    ]
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
}

impl Owner {
    /// Classify a sandbox by its labels.
    pub fn of(labels: &[(String, String)]) -> Owner {
        let get = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        if get(CREATED_BY) != Some("flue") {
            return Owner::NotFlue;
        }
        if get(KEEP) == Some("true") {
            return Owner::Kept;
        }
        match get(HOST) {
            Some(host) if host != this_host() => return Owner::OtherHost(host.to_string()),
            _ => {}
        }
        let alive = get(PROCESS).is_some_and(|process| {
            let mut parts = process.splitn(3, '-');
            let (pid, started, boot) = (parts.next(), parts.next(), parts.next());
            let pid = pid.and_then(|p| p.parse::<u32>().ok());
            let started = started.and_then(|s| s.parse::<u64>().ok());
            matches!((pid, started, boot), (Some(pid), Some(started), Some(boot))
                if boot == boot_id() && start_time(pid) == Some(started))
        });
        if alive { Owner::Running } else { Owner::Orphaned }
    }

    /// A word for listings.
    pub fn describe(&self) -> String {
        match self {
            Owner::NotFlue => "not flue's".into(),
            Owner::Kept => "kept".into(),
            Owner::Running => "run active".into(),
            Owner::Orphaned => "orphaned".into(),
            Owner::OtherHost(host) => format!("run on {host}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_tell_a_live_run_from_a_gone_one() {
        let mine = labels("run_1", "hello world/x", false);
        assert_eq!(Owner::of(&mine), Owner::Running);
        assert!(mine.iter().all(|(_, v)| v.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))));
        let mut gone = mine.clone();
        gone.retain(|(k, _)| k != PROCESS);
        // pid 1 exists, but did not start at tick 1.
        gone.push((PROCESS.into(), format!("1-1-{}", boot_id())));
        assert_eq!(Owner::of(&gone), Owner::Orphaned);
        assert_eq!(Owner::of(&labels("run_1", "a", true)), Owner::Kept);
        let mut elsewhere = mine.clone();
        elsewhere.retain(|(k, _)| k != HOST);
        elsewhere.push((HOST.into(), "another-machine".into()));
        assert_eq!(Owner::of(&elsewhere), Owner::OtherHost("another-machine".into()));
        assert_eq!(Owner::of(&[]), Owner::NotFlue);
    }
}
