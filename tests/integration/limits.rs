//! Local sandbox limits (memory, processes, CPU, file size) and the
//! supervisor that starts isolated commands: what a command can use, what
//! it says when a limit stops it, and that nothing outlives its `exec`.

use serde_json::{Value, json};

use crate::support::{Output, bwrap_available, flue, output, probe, scratch, skip_without_bwrap};

/// Whether cgroups enforce the limits in this run (flue says once when
/// only rlimits do).
fn cgroups_enforced(out: &Output) -> bool {
    !out.stderr.contains("local sandbox limits are weaker here")
}

/// Each exec mode a test should cover.
fn exec_modes() -> Vec<&'static str> {
    if bwrap_available() { vec!["supervisor", "per-command"] } else { vec!["supervisor"] }
}

#[test]
fn a_command_past_the_memory_limit_is_stopped_with_a_note_and_the_sandbox_goes_on() {
    for mode in exec_modes() {
        let tmp = scratch();
        let command =
            "python3 -c 'b = bytearray(1600 * 1024 * 1024); print(len(b))'; echo \"python=$?\"; /bin/echo usable";
        let out =
            probe(json!({"mode": "exec", "command": command}), &["--memory-gib", "1", "--exec-mode", mode], tmp.path());
        let result = out.ok();
        let (stdout, stderr) = (result["stdout"].as_str().unwrap(), result["stderr"].as_str().unwrap());
        assert!(!stdout.contains("1677721600"), "{mode}: 1.6 GiB was allocated under a 1 GiB limit: {result}");
        assert!(stdout.contains("usable"), "{mode}: the sandbox did not go on: {result}");
        if cgroups_enforced(&out) {
            assert!(stdout.contains("python=137"), "{mode}: {result}");
            assert!(stderr.contains("[flue: the sandbox reached its memory limit of 1 GiB"), "{mode}: {stderr}");
        }
    }
}

#[test]
fn spawning_stops_at_the_process_limit_and_forks_work_again_afterwards() {
    // A bounded spawner, never a fork bomb: at most 60 sleepers, all
    // killed before it exits.
    let spawner = r#"python3 -c '
import os, signal
pids = []
for _ in range(60):
    try:
        pid = os.fork()
    except OSError as err:
        print("refused", err.errno)
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    pids.append(pid)
print("started", len(pids))
for pid in pids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
'; /bin/echo forks-work"#;
    for mode in exec_modes() {
        let tmp = scratch();
        let out = probe(
            json!({"mode": "exec", "command": spawner}),
            &["--max-processes", "24", "--exec-mode", mode],
            tmp.path(),
        );
        let result = out.ok();
        let stdout = result["stdout"].as_str().unwrap();
        assert!(stdout.contains("refused 11"), "{mode}: fork was not refused with EAGAIN: {result}");
        let started: u32 = stdout.split("started ").nth(1).unwrap().lines().next().unwrap().parse().unwrap();
        assert!(started < 24, "{mode}: {started} processes started under a limit of 24");
        assert!(stdout.contains("forks-work"), "{mode}: {result}");
        if cgroups_enforced(&out) {
            assert!(result["stderr"].as_str().unwrap().contains("limit of 24 processes"), "{mode}: {result}");
        }
    }
}

#[test]
fn a_cpu_bound_command_gets_no_more_than_its_cpu_quota() {
    let tmp = scratch();
    // Two spinners for 1.5 s of wall time; their CPU time is what they got.
    let command = r#"python3 -c '
import os, time, resource
def spin():
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        pass
kids = [os.fork() for _ in range(2)]
if 0 in kids:
    spin(); os._exit(0)
for k in kids:
    os.waitpid(k, 0)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime)
'"#;
    let out = probe(json!({"mode": "exec", "command": command}), &["--cpus", "1"], tmp.path());
    if !cgroups_enforced(&out) {
        eprintln!("note: no CPU cgroup here; the CPU quota case is skipped");
        return;
    }
    let result = out.ok();
    let cpu: f64 = result["stdout"].as_str().unwrap().trim().parse().unwrap();
    // Unlimited, two spinners on two cores use ~3 s; a 1-CPU quota allows
    // ~1.5 s (plus one period of slack).
    assert!(cpu < 2.0, "two spinners used {cpu} s of CPU in 1.5 s under a 1-CPU quota");
}

#[test]
fn a_file_larger_than_the_size_limit_is_refused_with_a_note() {
    for mode in exec_modes() {
        let tmp = scratch();
        let command =
            "ulimit -f; head -c 1000 /dev/zero > small; dd if=/dev/zero of=big bs=1 count=1 seek=1G 2>/dev/null";
        let out =
            probe(json!({"mode": "exec", "command": command}), &["--disk-gib", "1", "--exec-mode", mode], tmp.path());
        let result = out.ok();
        assert_eq!(result["stdout"], "1048576\n", "{mode}: {result}");
        assert_eq!(result["exitCode"], 128 + 25, "{mode}: the write past the limit was not stopped: {result}");
        assert!(
            result["stderr"].as_str().unwrap().contains("[flue: a file reached the sandbox's file size limit of 1 GiB"),
            "{mode}: {result}"
        );
    }
}

#[test]
fn limits_from_create_options_resources_are_honoured() {
    let tmp = scratch();
    let command = "ulimit -f; python3 -c 'b = bytearray(1600 * 1024 * 1024)'; echo \"python=$?\"";
    let out = probe(
        json!({"mode": "exec", "command": command, "resources": {"memoryGib": 1, "diskGib": 2}}),
        &[],
        tmp.path(),
    );
    let result = out.ok();
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("2097152\n"), "disk-gib 2 did not set the file size limit: {result}");
    assert!(!stdout.contains("python=0"), "memory-gib 1 did not stop a 1.6 GiB allocation: {result}");
}

/// `execs` of the probe: each command's result, in order.
fn execs(commands: &[&str], args: &[&str]) -> Vec<Value> {
    let tmp = scratch();
    let out = probe(json!({"mode": "execs", "commands": commands}), args, tmp.path());
    out.ok().as_array().unwrap().clone()
}

/// The names of the processes a command sees.
const PROCESSES: &str = "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | sort | tr '\\n' ' '";

#[test]
fn nothing_a_command_starts_outlives_its_exec_even_a_daemon() {
    if skip_without_bwrap(
        "limits::nothing_a_command_starts_outlives_its_exec_even_a_daemon",
        "the supervisor runs only under isolation",
    ) {
        return;
    }
    for mode in exec_modes() {
        let results = execs(
            &[
                "setsid sleep 300 </dev/null >/dev/null 2>&1 & (sleep 301 </dev/null >/dev/null 2>&1 &); sleep 302 & echo started",
                PROCESSES,
            ],
            &["--exec-mode", mode],
        );
        assert_eq!(results[0]["stdout"], "started\n", "{mode}: {results:?}");
        let seen = results[1]["stdout"].as_str().unwrap();
        assert!(!seen.contains("sleep"), "{mode}: a process outlived its exec: {seen}");
    }
}

#[test]
fn a_killed_supervisor_is_reported_then_replaced() {
    if skip_without_bwrap(
        "limits::a_killed_supervisor_is_reported_then_replaced",
        "the supervisor runs only under isolation",
    ) {
        return;
    }
    let results = execs(&["echo $PPID", "kill -9 $PPID; sleep 5", "echo alive"], &["--exec-mode", "supervisor"]);
    assert!(results[0]["stdout"].as_str().unwrap().trim().parse::<u32>().is_ok(), "{results:?}");
    let error = results[1]["error"].as_str().unwrap_or_default();
    assert!(error.contains("SandboxDied") && error.contains("supervisor"), "{results:?}");
    assert_eq!(results[2]["stdout"], "alive\n", "the next command did not get a new supervisor: {results:?}");
}

#[test]
fn a_command_cannot_reach_the_supervisors_socket_or_memory() {
    if skip_without_bwrap(
        "limits::a_command_cannot_reach_the_supervisors_socket_or_memory",
        "the supervisor runs only under isolation",
    ) {
        return;
    }
    let results = execs(
        &[
            "ls /proc/self/fd | tr '\\n' ' '",
            "ls /proc/$PPID/fd 2>&1 >/dev/null; cat /proc/$PPID/environ 2>&1 | head -c 80",
        ],
        &["--exec-mode", "supervisor"],
    );
    // `ls` itself holds one more fd for the directory it lists.
    let fds: Vec<&str> = results[0]["stdout"].as_str().unwrap().split_whitespace().collect();
    assert!(fds.len() <= 4 && fds[..3] == ["0", "1", "2"], "a command inherited fds: {fds:?}");
    let probing = results[1]["stdout"].as_str().unwrap();
    assert!(probing.contains("Permission denied"), "the supervisor's /proc entries were readable: {results:?}");
}

#[test]
fn conformance_passes_in_both_exec_modes() {
    for mode in exec_modes() {
        let tmp = scratch();
        let out = output(flue().args(["conformance", "local", "--exec-mode", mode]).env("TMPDIR", tmp.path()));
        assert_eq!(out.code, 0, "{mode}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("0 failed"), "{mode}: {}", out.stdout);
    }
}

/// Started by an unprivileged user (no cgroups for it here), flue says
/// which weaker limits hold, and they do: processes, memory per process,
/// file size.
#[test]
fn an_unprivileged_user_gets_rlimits_and_is_told_so() {
    let Ok(user) = std::env::var("FLUE_TEST_UNPRIVILEGED_USER") else {
        eprintln!("note: FLUE_TEST_UNPRIVILEGED_USER is not set; the unprivileged run is skipped");
        return;
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: it runs flue as another user, which needs root");
        return;
    }
    if skip_without_bwrap(
        "limits::an_unprivileged_user_gets_rlimits_and_is_told_so",
        "isolation for an unprivileged user",
    ) {
        return;
    }
    let command =
        "ulimit -f; ulimit -u; python3 -c 'b = bytearray(1600 * 1024 * 1024)' 2>/dev/null; echo \"python=$?\"";
    let out = crate::support::probe_as(
        &user,
        json!({"mode": "exec", "command": command}),
        &["--isolation", "bwrap", "--memory-gib", "1", "--disk-gib", "1", "--max-processes", "64"],
    );
    let result = out.ok();
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("1048576\n64\n"), "{result}");
    assert!(!stdout.contains("python=0"), "1.6 GiB allocated under 1 GiB: {result}");
    if !cgroups_enforced(&out) {
        assert!(out.stderr.contains("in force: memory per process"), "{}", out.stderr);
    }
}

/// The operator's sizes are ceilings: an agent asking for more in its own
/// `resources` gets the ceiling, and the file API holds to the file size
/// limit as commands do.
#[test]
fn operator_limits_are_ceilings_for_agents_and_the_file_api() {
    let tmp = scratch();
    let ceilings = ["--memory-gib", "1", "--disk-gib", "1"];
    let command = "ulimit -f; python3 -c 'b = bytearray(1600 * 1024 * 1024)' 2>/dev/null; echo \"python=$?\"";
    let out = probe(
        json!({"mode": "exec", "command": command, "resources": {"memoryGib": 4, "diskGib": 8}}),
        &ceilings,
        tmp.path(),
    );
    let result = out.ok();
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("1048576\n"), "the agent raised the file size ceiling: {result}");
    assert!(!stdout.contains("python=0"), "the agent raised the memory ceiling: {result}");
    assert!(out.stderr.contains("memory-gib 4 (the ceiling is 1)"), "{}", out.stderr);

    // Zero is not "no limit".
    let zero = crate::support::output(&mut crate::support::flue_probe(
        json!({"mode": "exec", "command": "true", "resources": {"cpu": 0}}),
        &["--cpus", "1"],
        tmp.path(),
    ));
    assert_ne!(zero.code, 0, "cpu 0 was accepted");
    assert!(zero.stderr.contains("resources.cpu is 0"), "{}", zero.stderr);

    // 1 GiB + 1 MiB through the streamed file API, under --disk-gib 1.
    let tmp = scratch();
    let streamed = crate::support::output(&mut crate::support::flue_probe(
        json!({"mode": "stream", "mib": 1025}),
        &ceilings,
        tmp.path(),
    ));
    assert_ne!(streamed.code, 0, "a file past --disk-gib was written through the file API");
    assert!(streamed.stderr.contains("file size limit of 1 GiB"), "{}", streamed.stderr);
}
