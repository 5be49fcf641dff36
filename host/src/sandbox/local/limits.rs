//! Resource limits of a local sandbox: memory, processes, CPU, file size.
//!
//! Every process a sandbox's commands start is held to its sandbox's limits:
//!
//! * **cgroups**, where flue may create them (root with cgroup v1 controllers
//!   or cgroup v2): one cgroup per sandbox (per controller on v1) under the
//!   cgroup flue runs in, holding memory (swap included where the kernel
//!   accounts it), the number of processes, and a CPU quota. The launched
//!   process joins it before it execs, so nothing escapes it.
//! * **process rlimits** otherwise, which are weaker: memory per process
//!   (`RLIMIT_DATA`), processes per sandbox user (`RLIMIT_NPROC`, counted in
//!   the sandbox's user namespace; not enforceable for root, nor without
//!   isolation), no CPU limit. flue says once which limits hold.
//! * The size of a written file is always an rlimit (`RLIMIT_FSIZE`): a
//!   command writing past it gets `SIGXFSZ`.
//!
//! After a command ends, [`SandboxCgroup::counters`] tells whether a limit
//! struck (the OOM killer, a refused fork), so its result can say so.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::sandbox::Resources;

const GIB: u64 = 1024 * 1024 * 1024;
/// The CPU quota period (microseconds).
const CPU_PERIOD_US: u64 = 100_000;

/// One sandbox's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLimits {
    /// Memory of all its processes together (bytes).
    pub memory_bytes: u64,
    /// Processes (and threads) at once.
    pub max_processes: u64,
    /// CPU cores' worth of time (`None`: no quota).
    pub cpus: Option<u32>,
    /// The largest file a command may write (bytes).
    pub file_size_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits { memory_bytes: 2 * GIB, max_processes: 512, cpus: None, file_size_bytes: 10 * GIB }
    }
}

impl SandboxLimits {
    /// These limits resized as the operator asks (`--memory-gib`, `--cpus`,
    /// `--disk-gib`): they may go up as well as down.
    pub fn sized(mut self, resources: Option<&Resources>) -> Self {
        let Some(resources) = resources else { return self };
        if let Some(gib) = resources.memory_gib {
            self.memory_bytes = u64::from(gib).saturating_mul(GIB);
        }
        if let Some(cpus) = resources.cpu {
            self.cpus = Some(cpus);
        }
        if let Some(gib) = resources.disk_gib {
            self.file_size_bytes = u64::from(gib).saturating_mul(GIB);
        }
        self
    }

    /// These limits, lowered to what an agent's `resources` asks for: these
    /// are ceilings, which an agent may lower but never raise (`disk-gib`
    /// bounds the size of a file: the local sandbox has no disk quota of its
    /// own). Says what was asked for above a ceiling, in the second value.
    pub fn within(self, resources: Option<&Resources>) -> (Self, Vec<String>) {
        let Some(resources) = resources else { return (self, Vec::new()) };
        let asked = self.sized(Some(resources));
        let mut capped = Vec::new();
        let mut limits = self;
        if asked.memory_bytes > self.memory_bytes {
            capped.push(format!("memory {} (the ceiling is {})", bytes(asked.memory_bytes), bytes(self.memory_bytes)));
        }
        limits.memory_bytes = asked.memory_bytes.min(self.memory_bytes);
        limits.cpus = match (asked.cpus, self.cpus) {
            (Some(wanted), Some(ceiling)) if wanted > ceiling => {
                capped.push(format!("{wanted} CPU (the ceiling is {ceiling})"));
                Some(ceiling)
            }
            (wanted, ceiling) => wanted.or(ceiling),
        };
        if asked.file_size_bytes > self.file_size_bytes {
            capped.push(format!(
                "disk {} (the ceiling is {})",
                bytes(asked.file_size_bytes),
                bytes(self.file_size_bytes)
            ));
        }
        limits.file_size_bytes = asked.file_size_bytes.min(self.file_size_bytes);
        (limits, capped)
    }

    /// Each limit the lower of these and `other`'s.
    pub fn lowest(&self, other: &SandboxLimits) -> SandboxLimits {
        SandboxLimits {
            memory_bytes: self.memory_bytes.min(other.memory_bytes),
            max_processes: self.max_processes.min(other.max_processes),
            cpus: match (self.cpus, other.cpus) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            file_size_bytes: self.file_size_bytes.min(other.file_size_bytes),
        }
    }

    /// A short description, for notes and warnings.
    pub fn describe(&self) -> String {
        let cpus = self.cpus.map_or("no CPU quota".to_string(), |n| format!("{n} CPU"));
        format!(
            "memory {}, {} processes, {cpus}, files up to {}",
            bytes(self.memory_bytes),
            self.max_processes,
            bytes(self.file_size_bytes)
        )
    }
}

/// `n` bytes for a person.
pub(crate) fn bytes(n: u64) -> String {
    if n.is_multiple_of(GIB) { format!("{} GiB", n / GIB) } else { format!("{} MiB", n.div_ceil(1024 * 1024)) }
}

/// Which limits the machine lets flue enforce with cgroups.
#[derive(Debug)]
enum Mechanism {
    /// cgroup v1: a parent directory per controller flue may create in.
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpu: Option<PathBuf> },
    /// cgroup v2: the parent directory, controllers enabled below it.
    V2 { parent: PathBuf },
    /// Only rlimits; why.
    Rlimits { reason: String },
}

impl Mechanism {
    /// Found out once per process.
    fn get() -> &'static Mechanism {
        static FOUND: OnceLock<Mechanism> = OnceLock::new();
        FOUND.get_or_init(|| {
            let found = detect();
            tracing::debug!("local sandbox limits: {found:?}");
            found
        })
    }
}

/// The mount point of each cgroup hierarchy, from `/proc/self/mountinfo`:
/// (filesystem type, super options, mount point, root of the mount).
fn cgroup_mounts() -> Vec<(String, String, PathBuf, String)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fstype = *right.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some((fstype.to_string(), right.get(2)?.to_string(), PathBuf::from(left.get(4)?), left.get(3)?.to_string()))
        })
        .collect()
}

/// flue's own cgroup in each hierarchy, from `/proc/self/cgroup`:
/// (controllers, path).
fn own_cgroups() -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// `<mount>/<own path>/flue`, created, if flue may create cgroups there.
fn writable_parent(mount: &Path, mount_root: &str, own: &str) -> Result<PathBuf, String> {
    let relative = own.strip_prefix(mount_root).unwrap_or(own).trim_start_matches('/');
    let parent = mount.join(relative).join("flue");
    std::fs::create_dir_all(&parent).map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    let probe = parent.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|err| format!("cannot create cgroups in {}: {err}", parent.display()))?;
    let _ = std::fs::remove_dir(&probe);
    remove_stale(&parent);
    Ok(parent)
}

/// Remove the empty cgroups of flue processes that are gone (killed before
/// they could clean up): names end in `-<pid>`.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name.rsplit('-').next().and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

fn detect() -> Mechanism {
    let mounts = cgroup_mounts();
    let own = own_cgroups();
    let v1_parent = |controller: &str| -> Option<PathBuf> {
        let (_, _, mount, root) = mounts
            .iter()
            .find(|(fstype, options, _, _)| fstype == "cgroup" && options.split(',').any(|o| o == controller))?;
        let (_, path) = own.iter().find(|(controllers, _)| controllers.split(',').any(|c| c == controller))?;
        writable_parent(mount, root, path).ok()
    };
    let (memory, pids, cpu) = (v1_parent("memory"), v1_parent("pids"), v1_parent("cpu"));
    if memory.is_some() || pids.is_some() {
        return Mechanism::V1 { memory, pids, cpu };
    }
    if let Some((_, _, mount, _)) = mounts.iter().find(|(fstype, ..)| fstype == "cgroup2") {
        // The no-internal-processes rule: flue's own cgroup holds flue, so
        // sandboxes go in a sibling tree at the top, where root may enable
        // controllers.
        let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        if ["memory", "pids"].iter().all(|c| controllers.split_whitespace().any(|have| have == *c)) {
            let wanted: Vec<&str> = ["memory", "pids", "cpu"]
                .into_iter()
                .filter(|c| controllers.split_whitespace().any(|h| h == *c))
                .collect();
            let enable = wanted.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
            let parent = mount.join("flue");
            let ready = std::fs::write(mount.join("cgroup.subtree_control"), &enable)
                .and_then(|()| std::fs::create_dir_all(&parent))
                .and_then(|()| std::fs::write(parent.join("cgroup.subtree_control"), &enable));
            return match ready {
                Ok(()) => Mechanism::V2 { parent },
                Err(err) => {
                    Mechanism::Rlimits { reason: format!("cannot create cgroups in {}: {err}", parent.display()) }
                }
            };
        }
    }
    let reason = if mounts.is_empty() {
        "no cgroup filesystem is mounted".to_string()
    } else {
        "flue may not create cgroups here (it needs root, or a delegated cgroup)".to_string()
    };
    Mechanism::Rlimits { reason }
}

/// Which limits hold where cgroups do not: what process rlimits flue sets.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rlimits {
    /// `RLIMIT_DATA` (memory per process), when no memory cgroup.
    pub data: Option<u64>,
    /// `RLIMIT_NPROC`, when no pids cgroup (set inside the sandbox's user
    /// namespace only).
    pub nproc: Option<u64>,
    /// `RLIMIT_FSIZE`, always.
    pub fsize: u64,
}

/// Set a soft and hard limit.
pub(crate) fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit with a valid pointer to a local value.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A sandbox's cgroups, removed (after killing what is left in them) when
/// dropped.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each, open for writing: the launched process joins
    /// by writing `0` between fork and exec.
    procs: Vec<OwnedFd>,
    memory_events: Option<PathBuf>,
    pids_events: Option<PathBuf>,
}

/// How often the limits struck so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Processes killed by the OOM killer for the memory limit.
    pub oom_kills: u64,
    /// Forks refused for the process limit.
    pub refused_forks: u64,
}

/// What the limits of one sandbox come to on this machine.
#[derive(Debug)]
pub(crate) struct Enforced {
    pub cgroup: Option<SandboxCgroup>,
    pub rlimits: Rlimits,
}

/// Enforce `limits` for sandbox `id` as well as this machine allows, and
/// say once per process which limits hold when cgroups do not give them all.
pub(crate) fn enforce(id: &str, limits: &SandboxLimits, isolated: bool) -> Enforced {
    let mut rlimits = Rlimits { data: None, nproc: None, fsize: limits.file_size_bytes };
    let name = format!("{id}-{}", std::process::id());
    let cgroup = match Mechanism::get() {
        Mechanism::V1 { memory, pids, cpu } => {
            let mut cgroup = SandboxCgroup::empty();
            let mut fine = true;
            if let Some(parent) = memory {
                fine &= cgroup
                    .add(&parent.join(&name), |dir| {
                        std::fs::write(dir.join("memory.limit_in_bytes"), limits.memory_bytes.to_string())?;
                        // Swap counts too, where the kernel accounts it.
                        let _ =
                            std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limits.memory_bytes.to_string());
                        Ok(())
                    })
                    .is_ok();
                cgroup.memory_events = Some(parent.join(&name).join("memory.oom_control"));
            } else {
                rlimits.data = Some(limits.memory_bytes);
            }
            if let Some(parent) = pids {
                fine &= cgroup
                    .add(&parent.join(&name), |dir| {
                        std::fs::write(dir.join("pids.max"), limits.max_processes.to_string())
                    })
                    .is_ok();
                cgroup.pids_events = Some(parent.join(&name).join("pids.events"));
            } else {
                rlimits.nproc = Some(limits.max_processes);
            }
            if let (Some(parent), Some(cpus)) = (cpu, limits.cpus) {
                fine &= cgroup
                    .add(&parent.join(&name), |dir| {
                        std::fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                        std::fs::write(dir.join("cpu.cfs_quota_us"), (u64::from(cpus) * CPU_PERIOD_US).to_string())
                    })
                    .is_ok();
            }
            if fine { Some(cgroup) } else { None }
        }
        Mechanism::V2 { parent } => {
            let mut cgroup = SandboxCgroup::empty();
            let dir = parent.join(&name);
            let made = cgroup.add(&dir, |dir| {
                std::fs::write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                std::fs::write(dir.join("pids.max"), limits.max_processes.to_string())?;
                if let Some(cpus) = limits.cpus {
                    let _ = std::fs::write(
                        dir.join("cpu.max"),
                        format!("{} {CPU_PERIOD_US}", u64::from(cpus) * CPU_PERIOD_US),
                    );
                }
                Ok(())
            });
            cgroup.memory_events = Some(dir.join("memory.events"));
            cgroup.pids_events = Some(dir.join("pids.events"));
            made.ok().map(|()| cgroup)
        }
        Mechanism::Rlimits { .. } => None,
    };
    if cgroup.is_none() {
        rlimits.data = Some(limits.memory_bytes);
        rlimits.nproc = Some(limits.max_processes);
    }
    warn_once_if_weaker(&rlimits, limits, isolated);
    Enforced { cgroup, rlimits }
}

/// Say once, plainly, which limits hold when cgroups do not give them all.
fn warn_once_if_weaker(rlimits: &Rlimits, limits: &SandboxLimits, isolated: bool) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if rlimits.data.is_none() && rlimits.nproc.is_none() {
        return;
    }
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let why = match Mechanism::get() {
        Mechanism::Rlimits { reason } => reason.clone(),
        _ => "some cgroup controllers are missing".to_string(),
    };
    let mut held = Vec::new();
    if let Some(data) = rlimits.data {
        held.push(format!("memory per process, not per sandbox ({})", bytes(data)));
    }
    if let Some(nproc) = rlimits.nproc {
        if isolated {
            held.push(format!("{nproc} processes per sandbox user (not for root)"));
        } else {
            held.push("no process limit (commands are not isolated)".to_string());
        }
    }
    held.push("no CPU limit".to_string());
    tracing::warn!(
        "local sandbox limits are weaker here: {why}; in force: {}, files up to {}",
        held.join(", "),
        bytes(limits.file_size_bytes)
    );
}

impl SandboxCgroup {
    fn empty() -> Self {
        SandboxCgroup { dirs: Vec::new(), procs: Vec::new(), memory_events: None, pids_events: None }
    }

    /// Create `dir`, configure it, and open its `cgroup.procs`.
    fn add(&mut self, dir: &Path, configure: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        self.dirs.push(dir.to_path_buf());
        let configured = configure(dir).and_then(|()| {
            let procs = File::options().write(true).open(dir.join("cgroup.procs"))?;
            self.procs.push(procs.into());
            Ok(())
        });
        if let Err(err) = &configured {
            tracing::debug!("cgroup {}: {err}", dir.display());
        }
        configured
    }

    /// How often the limits struck so far.
    pub fn counters(&self) -> Counters {
        let count = |path: &Option<PathBuf>, key: &str| -> u64 {
            path.as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|text| text.lines().find_map(|line| line.strip_prefix(key)?.trim().parse().ok()))
                .unwrap_or(0)
        };
        Counters { oom_kills: count(&self.memory_events, "oom_kill "), refused_forks: count(&self.pids_events, "max ") }
    }

    /// Kill every process still in the cgroups.
    fn kill_all(&self) {
        for dir in &self.dirs {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..50 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill(2) with a pid read from the cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}

/// What a process launched for a sandbox does between fork and exec: join
/// the sandbox's cgroups, set its rlimits. Everything it starts inherits both.
pub(crate) struct Launch {
    cgroup_procs: Vec<OwnedFd>,
    rlimits: Rlimits,
}

impl Launch {
    /// The launch for `enforced` limits.
    pub fn new(enforced: &Enforced) -> Self {
        let cgroup_procs = enforced
            .cgroup
            .as_ref()
            .map(|cgroup| cgroup.procs.iter().filter_map(|fd| fd.try_clone().ok()).collect())
            .unwrap_or_default();
        Launch { cgroup_procs, rlimits: enforced.rlimits }
    }

    /// Apply in the child (async-signal-safe: write and setrlimit only).
    pub fn apply(&self) -> std::io::Result<()> {
        for fd in &self.cgroup_procs {
            // SAFETY: write(2) from a valid buffer to an fd we own; "0"
            // moves the writing process.
            if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        set_rlimit(libc::RLIMIT_FSIZE, self.rlimits.fsize)?;
        if let Some(data) = self.rlimits.data {
            set_rlimit(libc::RLIMIT_DATA, data)?;
        }
        Ok(())
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// What a command's result says when a limit ended or hampered it.
pub(crate) fn note(limits: &SandboxLimits, before: Counters, after: Counters, exit_code: i32) -> Option<String> {
    if after.oom_kills > before.oom_kills {
        return Some(format!(
            "[flue: the sandbox reached its memory limit of {}: a process was killed]",
            bytes(limits.memory_bytes)
        ));
    }
    if exit_code == 128 + libc::SIGXFSZ {
        return Some(format!(
            "[flue: a file reached the sandbox's file size limit of {}: the command was stopped]",
            bytes(limits.file_size_bytes)
        ));
    }
    if after.refused_forks > before.refused_forks {
        return Some(format!(
            "[flue: the sandbox reached its limit of {} processes: a new process was refused]",
            limits.max_processes
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_lower_the_limits_but_never_raise_them() {
        let resources = Resources { cpu: Some(2), memory_gib: Some(1), disk_gib: Some(3), gpu: None };
        let (limits, capped) = SandboxLimits::default().within(Some(&resources));
        assert_eq!(limits.memory_bytes, GIB);
        assert_eq!(limits.cpus, Some(2));
        assert_eq!(limits.file_size_bytes, 3 * GIB);
        assert_eq!(limits.max_processes, 512);
        assert!(capped.is_empty());
        assert_eq!(SandboxLimits::default().within(None).0, SandboxLimits::default());
        assert_eq!(limits.describe(), "memory 1 GiB, 512 processes, 2 CPU, files up to 3 GiB");

        // The operator's --memory-gib 1 --cpus 1 --disk-gib 1 are ceilings.
        let operator = Resources { cpu: Some(1), memory_gib: Some(1), disk_gib: Some(1), gpu: None };
        let ceiling = SandboxLimits::default().sized(Some(&operator));
        let greedy = Resources { cpu: Some(8), memory_gib: Some(64), disk_gib: Some(100), gpu: None };
        let (limits, capped) = ceiling.within(Some(&greedy));
        assert_eq!(limits, ceiling);
        assert_eq!(capped.len(), 3, "{capped:?}");
        // The operator may raise the defaults.
        let big = Resources { cpu: None, memory_gib: Some(8), disk_gib: None, gpu: None };
        assert_eq!(SandboxLimits::default().sized(Some(&big)).memory_bytes, 8 * GIB);
    }

    #[test]
    fn a_limit_note_names_the_limit_that_struck() {
        let limits = SandboxLimits::default();
        let none = Counters::default();
        let oom = Counters { oom_kills: 1, refused_forks: 0 };
        assert!(note(&limits, none, oom, 137).unwrap().contains("memory limit of 2 GiB"));
        assert!(note(&limits, none, none, 153).unwrap().contains("file size limit of 10 GiB"));
        let fork = Counters { oom_kills: 0, refused_forks: 3 };
        assert!(note(&limits, none, fork, 1).unwrap().contains("512 processes"));
        assert_eq!(note(&limits, oom, oom, 137), None);
    }
}
