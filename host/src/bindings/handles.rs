//! The host-side state behind each resource handle a guest holds.
//!
//! The bindings name these types (bindgen's `with`), so they live here, below
//! the rooms that serve the interfaces: `run`'s agent imports create
//! and use the agent's handles, `capability`'s HTTP the connector's
//! streams. A handle is only state; what it does is written where its
//! interface is served.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::model::Message;
use crate::sandbox::Sandbox;
use crate::sandbox::session::{Session, SessionReader, SessionWriter};

/// An agent's `sandbox` handle.
pub struct AgentSandbox {
    pub(crate) sandbox: Arc<dyn Sandbox>,
}

/// An agent's `harness` handle.
pub struct AgentHarness {
    pub(crate) sandbox: Arc<dyn Sandbox>,
    pub(crate) cwd: String,
    pub(crate) id: String,
    /// The model `prompt` uses (`provider/model`), if the agent named one.
    pub(crate) model: Option<String>,
}

/// An agent's `session` handle.
pub struct AgentSession {
    pub(crate) session: Session,
    pub(crate) name: String,
    /// The harness's name, for `prompt`'s errors.
    pub(crate) harness: String,
    /// The model `prompt` uses, if the agent named one.
    pub(crate) model: Option<String>,
    /// `prompt`'s conversation so far: a second prompt continues it.
    pub(crate) conversation: Vec<Message>,
}

/// An agent's `file-reader` handle: the file and where the next read
/// starts, and the open reader — which a resumed run whose reads are
/// answered from its journal opens only once the journal runs out.
pub struct AgentReader {
    pub(crate) session: Session,
    pub(crate) path: String,
    pub(crate) offset: u64,
    pub(crate) live: Option<SessionReader>,
}

/// An agent's `file-writer` handle. `stream` names it in the journal (the
/// journal's position when it was opened); `redo`: a resumed run writes it
/// again, its recorded parts notwithstanding (the crash came before it was
/// finished); `live`: the open writer, `None` while every part of it is
/// answered from the journal.
pub struct AgentWriter {
    pub(crate) stream: u64,
    pub(crate) redo: bool,
    pub(crate) live: Option<SessionWriter>,
    /// Its `finish` was called.
    pub(crate) finished: bool,
}

/// The body of a request a connector is sending in parts.
pub struct OutgoingBody {
    /// Parts go to the request through here; `None` once finished.
    pub(crate) sender: Option<tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>>,
    /// The request in flight.
    pub(crate) response: Option<tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>>>,
    pub(crate) url: Url,
    pub(crate) timeout: Duration,
}

impl Drop for OutgoingBody {
    fn drop(&mut self) {
        // Abandoned: stop the request rather than send a truncated body.
        if let Some(request) = self.response.take() {
            request.abort();
        }
    }
}

/// A response a connector reads in parts, secrets redacted as it goes.
pub struct ResponseStream {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) response: reqwest::Response,
    pub(crate) url: Url,
    pub(crate) timeout: Duration,
    /// Read, not yet handed to the connector: redacted up to `redacted`;
    /// past it, what could still be the start of a secret.
    pub(crate) buffer: Vec<u8>,
    pub(crate) redacted: usize,
    pub(crate) done: bool,
}
