//! Files read and written in parts (`open-read`, `open-write`), through the
//! run's journal like every other sandbox operation.
//!
//! A read records the bytes it returned, named by the file and the offset
//! it started at; a resumed run answers its reads from the journal and
//! opens the file only once the journal runs out, at the offset reached —
//! so a read cut by the crash continues where it stopped.
//!
//! A writer is named by the journal's position when it was opened. A
//! resumed run whose journal holds that writer's `finish` (or its drop,
//! unfinished) answers every part from the journal (the crash came after
//! the agent was done with it).
//! One whose journal does not — the crash came mid-stream — opens the file
//! again and writes every part again, as they come (at-least-once, like the
//! call in flight), consuming their entries on the way.

use wasmtime::component::Resource;

use super::imports::{AgentState, session_key};
use crate::bindings::handles::{AgentReader, AgentWriter};
use crate::journal::{self, Bytes, Journal};
use crate::sandbox::error::{SandboxError, SandboxResult};
use crate::sandbox::session::Session;

/// A trap carrying the journal's error.
fn trap(err: journal::JournalError) -> wasmtime::Error {
    wasmtime::Error::new(err)
}

/// Open `path` on `session` to read from byte `offset`.
pub(crate) async fn open_reader(
    journal: Option<&Journal>,
    session: &Session,
    path: &str,
    offset: u64,
) -> wasmtime::Result<SandboxResult<AgentReader>> {
    let reader = |live| AgentReader { session: session.clone(), path: path.to_string(), offset, live };
    let Some(journal) = journal else {
        return Ok(session.open_read(path, offset).await.map(|live| reader(Some(live))));
    };
    let key = session_key(session, "open-read", &[path.as_bytes(), &offset.to_le_bytes()]);
    if let Some(recorded) = journal.replay::<SandboxResult<()>>(&key).map_err(trap)? {
        return Ok(recorded.map(|()| reader(None)));
    }
    let opened = session.open_read(path, offset).await;
    journal.record(&key, &opened.as_ref().map(|_| ()).map_err(SandboxError::clone));
    Ok(opened.map(|live| reader(Some(live))))
}

/// Open `path` on `session` to write in parts.
pub(crate) async fn open_writer(
    journal: Option<&Journal>,
    session: &Session,
    path: &str,
) -> wasmtime::Result<SandboxResult<AgentWriter>> {
    let Some(journal) = journal else {
        return Ok(session.open_write(path).await.map(|live| AgentWriter {
            stream: 0,
            redo: false,
            live: Some(live),
            finished: false,
        }));
    };
    let stream = journal.position();
    let key = session_key(session, "open-write", &[path.as_bytes()]);
    match journal.replay::<SandboxResult<()>>(&key).map_err(trap)? {
        Some(Err(err)) => Ok(Err(err)),
        // Finished, or let go unfinished, before the crash: the journal
        // answers all of it.
        Some(Ok(())) if journal.recorded_ahead(&finish_key(stream)) || journal.recorded_ahead(&drop_key(stream)) => {
            Ok(Ok(AgentWriter { stream, redo: false, live: None, finished: false }))
        }
        // Still being written at the crash: written again.
        Some(Ok(())) => {
            let writer = |live| AgentWriter { stream, redo: true, live: Some(live), finished: false };
            Ok(session.open_write(path).await.map(writer))
        }
        None => {
            let opened = session.open_write(path).await;
            journal.record(&key, &opened.as_ref().map(|_| ()).map_err(SandboxError::clone));
            Ok(opened.map(|live| AgentWriter { stream, redo: false, live: Some(live), finished: false }))
        }
    }
}

fn write_key(stream: u64, data: &[u8]) -> String {
    journal::key("write-part", &[&stream.to_le_bytes(), data])
}

fn finish_key(stream: u64) -> String {
    journal::key("finish-write", &[&stream.to_le_bytes()])
}

fn drop_key(stream: u64) -> String {
    journal::key("drop-writer", &[&stream.to_le_bytes()])
}

impl AgentReader {
    /// At most `max` next bytes.
    async fn read(&mut self, journal: Option<&Journal>, max: u32) -> wasmtime::Result<SandboxResult<Vec<u8>>> {
        let Some(journal) = journal else {
            return Ok(self.read_live(max).await);
        };
        let key = session_key(
            &self.session,
            "read-part",
            &[self.path.as_bytes(), &self.offset.to_le_bytes(), &max.to_le_bytes()],
        );
        let read = match journal.replay::<SandboxResult<Bytes>>(&key).map_err(trap)? {
            Some(recorded) => recorded.map(|bytes| bytes.0),
            None => {
                let read = self.read_live(max).await;
                journal.record(&key, &read.as_ref().map(|bytes| Bytes(bytes.clone())).map_err(SandboxError::clone));
                read
            }
        };
        if let Ok(bytes) = &read {
            self.offset += bytes.len() as u64;
        }
        Ok(read)
    }

    /// Read from the file itself, opening it at the offset reached if a
    /// resumed run has not yet.
    async fn read_live(&mut self, max: u32) -> SandboxResult<Vec<u8>> {
        if self.live.is_none() {
            self.live = Some(self.session.open_read(&self.path, self.offset).await?);
        }
        self.live.as_mut().expect("opened above").read(max as usize).await
    }
}

impl AgentWriter {
    /// Append `data`.
    async fn write(&mut self, journal: Option<&Journal>, data: &[u8]) -> wasmtime::Result<SandboxResult<()>> {
        let stream = self.stream;
        self.step(journal, || write_key(stream, data), |live| Box::pin(live.write(data))).await
    }

    /// Complete the file.
    async fn finish(&mut self, journal: Option<&Journal>) -> wasmtime::Result<SandboxResult<()>> {
        let key = finish_key(self.stream);
        self.finished = true;
        self.step(journal, || key, |live| Box::pin(live.finish())).await
    }

    /// The agent let go of the writer: if unfinished, the journal notes it,
    /// so that a resume does not take it for one the crash cut short.
    fn dropped(&self, journal: Option<&Journal>) -> wasmtime::Result<()> {
        if let Some(journal) = journal.filter(|_| !self.finished) {
            let key = drop_key(self.stream);
            if journal.replay::<()>(&key).map_err(trap)?.is_none() {
                journal.record(&key, &());
            }
        }
        Ok(())
    }

    /// One writer call: from the journal while it has it (and, redoing, live
    /// as well), else live and recorded.
    async fn step<'a>(
        &'a mut self,
        journal: Option<&Journal>,
        key: impl FnOnce() -> String,
        call: impl FnOnce(
            &'a mut crate::sandbox::session::SessionWriter,
        ) -> std::pin::Pin<Box<dyn Future<Output = SandboxResult<()>> + Send + 'a>>,
    ) -> wasmtime::Result<SandboxResult<()>> {
        let (journal, key) = match journal {
            Some(journal) => (Some(journal), key()),
            None => (None, String::new()),
        };
        let recorded = match journal {
            Some(journal) => journal.replay::<SandboxResult<()>>(&key).map_err(trap)?,
            None => None,
        };
        if let Some(recorded) = &recorded
            && !self.redo
        {
            return Ok(recorded.clone());
        }
        let Some(live) = self.live.as_mut() else {
            // Every part of a finished stream is in the journal before its
            // finish: this cannot run out first, unless the journal is cut.
            return Err(trap(journal::JournalError::Corrupt {
                seq: self.stream,
                reason: "a stream finished before the crash is missing parts".into(),
            }));
        };
        let result = call(live).await;
        if let (Some(journal), None) = (journal, recorded) {
            journal.record(&key, &result);
        }
        Ok(result)
    }
}

impl crate::bindings::agent::flue::sandbox::sandbox_api::HostFileReader for AgentState {
    async fn read(
        &mut self,
        this: Resource<AgentReader>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, crate::bindings::agent::flue::sandbox::types::SandboxError>> {
        let journal = self.journal.clone();
        let reader = self.base.table.get_mut(&this)?;
        Ok(reader.read(journal.as_deref(), max).await?.map_err(Into::into))
    }

    async fn drop(&mut self, this: Resource<AgentReader>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl crate::bindings::agent::flue::sandbox::sandbox_api::HostFileWriter for AgentState {
    async fn write(
        &mut self,
        this: Resource<AgentWriter>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), crate::bindings::agent::flue::sandbox::types::SandboxError>> {
        let journal = self.journal.clone();
        let writer = self.base.table.get_mut(&this)?;
        Ok(writer.write(journal.as_deref(), &data).await?.map_err(Into::into))
    }

    async fn finish(
        &mut self,
        this: Resource<AgentWriter>,
    ) -> wasmtime::Result<Result<(), crate::bindings::agent::flue::sandbox::types::SandboxError>> {
        let journal = self.journal.clone();
        let writer = self.base.table.get_mut(&this)?;
        Ok(writer.finish(journal.as_deref()).await?.map_err(Into::into))
    }

    async fn drop(&mut self, this: Resource<AgentWriter>) -> wasmtime::Result<()> {
        let journal = self.journal.clone();
        self.base.table.get(&this)?.dropped(journal.as_deref())?;
        self.drop_handle(this)
    }
}
