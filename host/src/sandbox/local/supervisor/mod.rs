//! The supervisor: the one process that stays alive inside an isolated
//! local sandbox and starts each command there, so a command costs a fork
//! and an exec instead of new namespaces.
//!
//! [`inside`] is the supervisor itself (the `flue` binary started by
//! bubblewrap as `flue __flue-supervisor FD NPROC`); [`host`] is flue's side,
//! which starts it, hands it commands and learns how they ended. They speak
//! over a `SOCK_SEQPACKET` socket, one [`Request`] or [`Reply`] per packet,
//! as JSON: packets keep message boundaries, so no length prefix is needed,
//! and each side reads into a fixed buffer ([`MAX_PACKET`]) and ignores what
//! does not parse. A start request carries three fds beside its packet: a
//! memfd holding the [`StartRequest`], then the write ends of stdout and
//! stderr.

mod host;
mod inside;

use serde::{Deserialize, Serialize};

pub(crate) use host::{Ended, Supervisor};
pub use inside::{SUPERVISOR_ARG, run_if_requested};

/// The largest packet either side sends or reads.
const MAX_PACKET: usize = 2048;

/// The longest failure message the supervisor sends (it is cut to fit).
const MAX_MESSAGE: usize = 1024;

/// What the host asks the supervisor to run (in the memfd of a start).
#[derive(Serialize, Deserialize)]
struct StartRequest {
    command: String,
    cwd: String,
    env: Vec<(String, String)>,
}

/// Host → supervisor.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Request {
    /// Start the command whose fds come with this packet.
    Start { id: u64 },
    /// Kill command `id` and every process of its session.
    Kill { id: u64 },
}

/// Supervisor → host.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Reply {
    /// Sent once, when it is ready for requests.
    Ready,
    /// Command `id` ended: its exit code, signals as 128 + n.
    Exited { id: u64, code: i32 },
    /// Command `id` could not start: the OS's error number when there is
    /// one (`EAGAIN`: the process limit refused the fork), and what failed.
    NotStarted { id: u64, errno: Option<i32>, message: String },
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data")
    }
}

impl Reply {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data")
    }

    /// A start that failed with `err`, its message cut to [`MAX_MESSAGE`].
    fn not_started(id: u64, err: &std::io::Error) -> Reply {
        let mut message = err.to_string();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Reply::NotStarted { id, errno: err.raw_os_error(), message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_the_longest_fits_a_packet() {
        for request in [Request::Start { id: u64::MAX }, Request::Kill { id: 7 }] {
            assert_eq!(serde_json::from_slice::<Request>(&request.encode()).unwrap(), request);
        }
        let long = std::io::Error::other("é".repeat(MAX_MESSAGE));
        let reply = Reply::not_started(u64::MAX, &long);
        assert!(reply.encode().len() <= MAX_PACKET, "{} bytes", reply.encode().len());
        assert_eq!(serde_json::from_slice::<Reply>(&reply.encode()).unwrap(), reply);
        let refused = Reply::not_started(3, &std::io::Error::from_raw_os_error(libc::EAGAIN));
        assert!(matches!(refused, Reply::NotStarted { errno: Some(libc::EAGAIN), .. }));
        // Garbage is refused, not guessed at.
        assert!(serde_json::from_slice::<Reply>(b"exit 3 0").is_err());
        assert!(serde_json::from_slice::<Reply>(br#"{"op":"exited","id":3}"#).is_err());
    }
}
