//! Client connections: the accept loop, with a cap on open connections and
//! timeouts on clients that send or read too slowly, and shutdown in two
//! steps — stop accepting and let open connections finish what they are
//! doing, then (the grace period over) close whatever is left.
//!
//! * At most `max` connections are open; past that, new ones wait in the
//!   kernel's backlog until one closes (the cap stays below the process's
//!   descriptor limit, so runs can still open files). The backlog is
//!   [`BACKLOG`], not the usual 128: a burst of clients past the cap waits
//!   there instead of having its connections dropped and retried seconds
//!   later.
//! * A request's line and headers must arrive within `header_timeout`; an
//!   idle kept-alive connection is closed after as long.
//! * A write that cannot progress for `stall_timeout` (the client does not
//!   read its answer) closes the connection. Bodies have their own timeout
//!   where they are read (see `bodies`).
//! * What hyper answers itself (a request it cannot parse) is made JSON
//!   ([`super::parse_errors`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::metrics::Metrics;
use super::parse_errors::JsonParseErrors;

/// Connections the kernel holds, set up, until they are accepted (it
/// lowers this to its own `net.core.somaxconn`).
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` with a backlog of [`BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at once.
    pub max: usize,
    /// Time to send a request's line and headers (and to stay idle).
    pub header_timeout: Duration,
    /// The longest a write may wait on a client that does not read.
    pub stall_timeout: Duration,
}

/// Serve `app` on `listener` until `stop_accepting` resolves; then let
/// open connections finish until they are done or `close_all` resolves,
/// when the rest are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop_accepting: impl Future<Output = ()>,
    close_all: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let warned = AtomicBool::new(false);
    tokio::pin!(stop_accepting);
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop_accepting => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors (EMFILE) or a connection reset before
                    // it was accepted: say so once, back off, go on.
                    if !warned.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "flue: cannot accept a connection: {err} (if this says too many open files: lower \
                             --max-connections or raise ulimit -n)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop_accepting => break,
        };
        connections.spawn(serve_one(stream, app.clone(), limits, slot, drain_rx.clone(), metrics.clone()));
    }
    // New connections are refused from here on.
    drop(listener);
    let _ = drain_tx.send(true);
    tokio::pin!(close_all);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { return },
            () = &mut close_all => {
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                return;
            }
        }
    }
}

/// Counts an open connection in `/metrics` while it lives.
struct Open(Arc<Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_one(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    _slot: OwnedSemaphorePermit,
    mut drain: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    let _open = Open(metrics);
    let _ = stream.set_nodelay(true);
    let io =
        TokioIo::new(JsonParseErrors::new(StallGuard { inner: stream, limit: limits.stall_timeout, stalled: None }));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        if !draining && *drain.borrow_and_update() {
            draining = true;
            // Finish the request in progress, then close; idle: close now.
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = drain.changed(), if !draining => {
                if changed.is_err() {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A socket whose writes fail once they have waited `limit` on a client
/// that does not read.
struct StallGuard {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    /// After a write returned `Pending`: still waiting, or given up.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
