//! Isolated sandboxes made ready before anyone asks for one (`flue serve
//! --ready-sandboxes N`): a directory, the default limits, and a supervisor
//! already started in its bubblewrap sandbox, so that a run's first command
//! costs a fork rather than new namespaces, mounts and a process to start
//! them.
//!
//! Only a plain request is served from here: no volumes, no environment,
//! the default limits. Each ready sandbox is handed out once, relabelled for
//! the run that takes it, and replaced in the background; the run deletes it
//! as any other. Ready sandboxes carry this process's ownership labels, so
//! the ones a crash leaves behind are `flue sandboxes gc`'s to delete; the
//! ones left when the pool is dropped are deleted then.
//!
//! `flue run` makes one ahead ([`ReadyAhead::One`]): its sandbox starts
//! while the agent is loaded, and the run's first request waits for it
//! rather than starting another.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::LocalSandbox;
use super::sandbox_dirs::{Metadata, SandboxDirs};
use crate::sandbox::error::SandboxResult;

/// The most ready sandboxes a server may keep (`--ready-sandboxes`).
pub const MAX_READY: usize = 64;

/// Which isolated sandboxes `local` makes before anyone asks for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadyAhead {
    /// None: each is made when asked for.
    #[default]
    None,
    /// This many (at most [`MAX_READY`]) kept ready, each replaced once
    /// taken (a server's `--ready-sandboxes`).
    Kept(usize),
    /// One, never replaced, for the first plain request, which waits for
    /// it while it is being made (`flue run`).
    One,
}

/// Makes one ready sandbox: the connector's own way of creating and
/// opening one, with its supervisor started.
pub(crate) type Make = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = SandboxResult<Ready>> + Send>> + Send + Sync>;

/// A sandbox made ready, not yet handed out.
pub(crate) struct Ready {
    pub sandbox: LocalSandbox,
    pub metadata: Metadata,
}

/// The ready sandboxes, and how to make more.
pub(crate) struct ReadyPool {
    size: usize,
    /// Taken sandboxes are replaced ([`ReadyAhead::Kept`]); otherwise a
    /// take waits for one being made ([`ReadyAhead::One`]).
    replaced: bool,
    state: Mutex<State>,
    /// A sandbox was made, or failed to be.
    made: tokio::sync::Notify,
    make: Make,
    dirs: Arc<SandboxDirs>,
}

#[derive(Default)]
struct State {
    ready: Vec<Ready>,
    /// Sandboxes being made now.
    making: usize,
    /// None can be made here (sandboxes are not isolated): none is tried.
    off: bool,
    /// Sandboxes handed out.
    taken: usize,
}

impl ReadyPool {
    /// The pool `ahead` asks for, its sandboxes made by `make`; none is
    /// made until [`ReadyPool::fill`].
    pub fn new(ahead: ReadyAhead, make: Make, dirs: Arc<SandboxDirs>) -> Option<Arc<Self>> {
        let (size, replaced) = match ahead {
            ReadyAhead::None | ReadyAhead::Kept(0) => return None,
            ReadyAhead::Kept(size) => (size.min(MAX_READY), true),
            ReadyAhead::One => (1, false),
        };
        Some(Arc::new(ReadyPool {
            size,
            replaced,
            state: Mutex::default(),
            made: tokio::sync::Notify::new(),
            make,
            dirs,
        }))
    }

    /// A ready sandbox, relabelled with `metadata`'s name and labels, if
    /// one is (or, never replaced, is being made); a kept pool then makes
    /// more in the background.
    pub async fn take(self: &Arc<Self>, metadata: &Metadata) -> Option<LocalSandbox> {
        let taken = loop {
            // Made before looking, so that no news between is missed.
            let made = self.made.notified();
            {
                let mut state = self.lock();
                if let Some(ready) = state.ready.pop() {
                    state.taken += 1;
                    break Some(ready);
                }
                if self.replaced || state.making == 0 {
                    break None;
                }
            }
            made.await;
        };
        if self.replaced {
            self.fill();
        }
        let Ready { sandbox, metadata: made } = taken?;
        let relabelled = Metadata { name: metadata.name.clone(), labels: metadata.labels.clone(), ..made };
        match self.dirs.rewrite(&sandbox.id, &relabelled) {
            Ok(()) => Some(sandbox),
            Err(err) => {
                tracing::warn!("a ready sandbox could not be handed out: {err}");
                discard(&self.dirs, sandbox);
                None
            }
        }
    }

    /// Make sandboxes in the background until `size` are ready or being
    /// made (nothing outside a tokio runtime).
    pub fn fill(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = self.lock();
        // A pool never replaced makes each of its sandboxes once.
        let size = if self.replaced { self.size } else { self.size.saturating_sub(state.taken) };
        while !state.off && state.ready.len() + state.making < size {
            state.making += 1;
            let (pool, dirs, made) = (Arc::downgrade(self), self.dirs.clone(), (self.make)());
            runtime.spawn(async move {
                let made = made.await;
                match (pool.upgrade(), made) {
                    (Some(pool), Ok(ready)) => {
                        let mut state = pool.lock();
                        state.making -= 1;
                        state.ready.push(ready);
                        drop(state);
                        pool.made.notify_waiters();
                    }
                    (Some(pool), Err(err)) => {
                        let mut state = pool.lock();
                        state.making -= 1;
                        if err.kind == crate::sandbox::error::ErrorKind::Unsupported {
                            state.off = true;
                        } else {
                            // Not retried at once: the next take tries again.
                            tracing::warn!("could not make a ready local sandbox: {err}");
                        }
                        drop(state);
                        pool.made.notify_waiters();
                    }
                    // The pool is gone (its connector was dropped).
                    (None, Ok(ready)) => discard(&dirs, ready.sandbox),
                    (None, Err(_)) => {}
                }
            });
        }
    }

    /// How many are ready now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sandbox being made: its files are deleted when this is dropped,
/// unless [`DeleteUnlessKept::keep`] was called.
pub(crate) struct DeleteUnlessKept {
    dirs: Arc<SandboxDirs>,
    id: Option<String>,
}

impl DeleteUnlessKept {
    pub fn new(dirs: Arc<SandboxDirs>, id: String) -> Self {
        DeleteUnlessKept { dirs, id: Some(id) }
    }

    /// It was made whole: keep it.
    pub fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for DeleteUnlessKept {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.dirs.delete(&id);
        }
    }
}

/// Stop a sandbox never handed out, and delete its files.
fn discard(dirs: &SandboxDirs, sandbox: LocalSandbox) {
    let id = sandbox.id.clone();
    // Its supervisor stops first (dropping the sandbox), then its files go.
    drop(sandbox);
    if let Err(err) = dirs.delete(&id) {
        tracing::warn!("could not delete ready sandbox {id}: {err}");
    }
}

impl Drop for ReadyPool {
    fn drop(&mut self) {
        for ready in std::mem::take(&mut self.lock().ready) {
            discard(&self.dirs, ready.sandbox);
        }
    }
}
