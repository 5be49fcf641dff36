//! The seccomp filter isolated commands run under: no setuid or setgid bits.
//!
//! Commands may run as root inside the sandbox (when flue runs as root), and
//! root may set the setuid bit on a file it owns. Bind mounts are `nosuid`,
//! so such a bit does nothing inside; but a kept sandbox's directory is on
//! the host, where the bit would work. So the bits are refused outright:
//! every syscall that can set a mode (`chmod` family, `open`/`creat` with
//! `O_CREAT`, `mknod`) fails with `EPERM` when the mode carries `S_ISUID` or
//! `S_ISGID`. `openat2` takes its mode in a struct the filter cannot read,
//! so it fails with `ENOSYS` and callers fall back to `openat`.
//!
//! A build's fetch phase, the one phase of an agent's build that keeps the
//! host's network, adds [`no_unix_sockets`]: `socket(AF_UNIX, …)` fails, so
//! nothing in it reaches the abstract unix sockets of the host's network
//! namespace (X11's `@/tmp/.X11-unix/X0`, D-Bus) or any socket file.
//!
//! The program is compiled by `seccompiler` (rust-vmm), which also rejects
//! syscalls made through another ABI (i386 on x86_64) by killing the
//! process: otherwise they would bypass a filter keyed on x86_64 numbers.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// `fchmodat2` (Linux 6.6), not yet named by every libc crate; the same
/// number on x86_64 and aarch64.
const SYS_FCHMODAT2: i64 = 452;
/// x32 ABI syscalls are x86_64 numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// The syscalls that take a mode, and which argument carries it.
fn mode_syscalls() -> Vec<(i64, u8)> {
    let mut calls = vec![
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (SYS_FCHMODAT2, 2),
        (libc::SYS_openat, 3),
        (libc::SYS_mknodat, 2),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([(libc::SYS_chmod, 1), (libc::SYS_open, 2), (libc::SYS_creat, 1), (libc::SYS_mknod, 1)]);
    calls
}

/// The compiled filters, as the bytes bubblewrap's `--add-seccomp-fd FD`
/// reads: one refusing setuid/setgid modes with `EPERM`, one answering
/// `openat2` with `ENOSYS`. (A filter has one action for its matches; the
/// kernel applies every installed filter and the strictest answer wins.)
pub fn programs() -> Result<&'static [Vec<u8>], String> {
    static PROGRAMS: OnceLock<Result<Vec<Vec<u8>>, String>> = OnceLock::new();
    PROGRAMS.get_or_init(compile).as_deref().map_err(Clone::clone)
}

fn compile() -> Result<Vec<Vec<u8>>, String> {
    let arch: seccompiler::TargetArch =
        std::env::consts::ARCH.try_into().map_err(|_| format!("no seccomp filter for {}", std::env::consts::ARCH))?;
    let mut no_setid: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (syscall, mode_arg) in mode_syscalls() {
        let mut chain = Vec::new();
        for bit in [libc::S_ISUID, libc::S_ISGID] {
            let bit = u64::from(bit);
            let condition = SeccompCondition::new(mode_arg, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(bit), bit)
                .map_err(|e| e.to_string())?;
            chain.push(SeccompRule::new(vec![condition]).map_err(|e| e.to_string())?);
        }
        #[cfg(target_arch = "x86_64")]
        no_setid.insert(syscall | X32_SYSCALL_BIT, chain.clone());
        no_setid.insert(syscall, chain);
    }
    let no_openat2 = BTreeMap::from([(libc::SYS_openat2, vec![])]);
    [(no_setid, libc::EPERM), (no_openat2, libc::ENOSYS)]
        .into_iter()
        .map(|(rules, errno)| {
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
                .map_err(|e| e.to_string())?;
            let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
            Ok(encode(&program))
        })
        .collect()
}

/// The filter a networked build phase adds: creating an `AF_UNIX` socket
/// fails with `EAFNOSUPPORT` (socket pairs, which reach nothing outside,
/// still work).
pub fn no_unix_sockets() -> Result<&'static [u8], String> {
    static PROGRAM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PROGRAM.get_or_init(compile_no_unix_sockets).as_deref().map_err(Clone::clone)
}

fn compile_no_unix_sockets() -> Result<Vec<u8>, String> {
    let arch: seccompiler::TargetArch =
        std::env::consts::ARCH.try_into().map_err(|_| format!("no seccomp filter for {}", std::env::consts::ARCH))?;
    let unix = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::AF_UNIX as u64)
        .map_err(|e| e.to_string())?;
    let rule = vec![SeccompRule::new(vec![unix]).map_err(|e| e.to_string())?];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_socket | X32_SYSCALL_BIT, rule.clone());
    rules.insert(libc::SYS_socket, rule);
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EAFNOSUPPORT as u32), arch)
        .map_err(|e| e.to_string())?;
    let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
    Ok(encode(&program))
}

/// `struct sock_filter` as the kernel reads it: u16 code, u8 jt, u8 jf, u32 k.
fn encode(program: &[seccompiler::sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}
