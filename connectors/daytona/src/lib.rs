//! Daytona sandboxes for flue.
//!
//! A wasm component of the `flue:sandbox/connector` world. It reaches Daytona
//! only through the host's `http` import, and never holds the API key: it
//! writes `Authorization: Bearer {{DAYTONA_API_KEY}}` and the host fills the
//! key in on requests to allowed hosts. The wire protocol follows the
//! official SDK (see `shared/daytona-wire-spec.md` in the design notes):
//!
//! * lifecycle on `{DAYTONA_API_URL}/sandbox…`;
//! * commands and files on the toolbox proxy, `{toolboxProxyUrl}/{id}/…`.

wit_bindgen::generate!({ path: "wit", world: "flue:sandbox/connector" });

mod api;
mod exec;
mod files;
mod lifecycle;
mod model;
mod multipart;
mod time;
mod volumes;

use std::cell::RefCell;

use exports::flue::sandbox::lifecycle::{ConnectorInfo, Guest as Lifecycle, SandboxSummary, VolumeInfo};
use exports::flue::sandbox::sandbox_api::{
    FileReader as ReaderHandle, FileWriter as WriterHandle, Guest as Api, GuestFileReader, GuestFileWriter,
    GuestSandbox, Sandbox as SandboxHandle,
};
use flue::sandbox::types::{CreateOptions, ExecOptions, ExecResult, FileStat, MkdirOptions, RmOptions, SandboxError};

/// One Daytona sandbox, as the connector holds it.
pub struct DaytonaSandbox {
    id: String,
    /// `{toolboxProxyUrl}/{id}`, without a trailing slash.
    toolbox: String,
    workdir: String,
    /// Set once the sandbox was found dead: later calls fail at once.
    dead: RefCell<Option<String>>,
}

impl DaytonaSandbox {
    /// Run a toolbox operation; when the request did not reach a working
    /// sandbox, ask the API about the sandbox and report `sandbox-died`.
    /// Once dead, every later call fails at once, without a request.
    fn guard<T>(&self, op: impl FnOnce() -> Result<T, api::ApiError>) -> Result<T, SandboxError> {
        if let Some(reason) = self.dead.borrow().as_ref() {
            return Err(SandboxError::SandboxDied(reason.clone()));
        }
        match op() {
            Ok(value) => Ok(value),
            Err(api::ApiError::Unreachable(err)) => match lifecycle::death_of(&self.id) {
                Some(reason) => {
                    *self.dead.borrow_mut() = Some(reason.clone());
                    Err(SandboxError::SandboxDied(reason))
                }
                None => Err(err),
            },
            Err(api::ApiError::Answer(err)) => Err(err),
        }
    }
}

impl GuestSandbox for DaytonaSandbox {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn workdir(&self) -> String {
        self.workdir.clone()
    }

    fn read_file(&self, path: String) -> Result<Vec<u8>, SandboxError> {
        self.guard(|| files::read(&self.toolbox, &path))
    }

    fn write_file(&self, path: String, data: Vec<u8>) -> Result<(), SandboxError> {
        self.guard(|| files::write(&self.toolbox, &path, &data))
    }

    fn stat(&self, path: String) -> Result<FileStat, SandboxError> {
        self.guard(|| files::stat(&self.toolbox, &path))
    }

    fn readdir(&self, path: String) -> Result<Vec<String>, SandboxError> {
        self.guard(|| files::readdir(&self.toolbox, &path))
    }

    fn exists(&self, path: String) -> Result<bool, SandboxError> {
        self.guard(|| files::exists(&self.toolbox, &path))
    }

    fn mkdir(&self, path: String, options: MkdirOptions) -> Result<(), SandboxError> {
        self.guard(|| files::mkdir(&self.toolbox, &path, options.recursive))
    }

    fn rm(&self, path: String, options: RmOptions) -> Result<(), SandboxError> {
        self.guard(|| files::rm(&self.toolbox, &path, options.recursive, options.force))
    }

    fn exec(&self, command: String, options: ExecOptions) -> Result<ExecResult, SandboxError> {
        self.guard(|| exec::run(&self.toolbox, &command, &options))
    }

    fn open_read(&self, path: String, offset: u64) -> Result<ReaderHandle, SandboxError> {
        let reader = self.guard(|| files::open_read(&self.toolbox, &path, offset))?;
        Ok(ReaderHandle::new(DaytonaReader(RefCell::new(reader))))
    }

    fn open_write(&self, path: String) -> Result<WriterHandle, SandboxError> {
        let writer = self.guard(|| files::open_write(&self.toolbox, &path))?;
        Ok(WriterHandle::new(DaytonaWriter(RefCell::new(writer))))
    }
}

/// A file being read from a Daytona sandbox.
pub struct DaytonaReader(RefCell<files::Reader>);

impl GuestFileReader for DaytonaReader {
    fn read(&self, max: u32) -> Result<Vec<u8>, SandboxError> {
        self.0.borrow_mut().read(max).map_err(Into::into)
    }
}

/// A file being written to a Daytona sandbox.
pub struct DaytonaWriter(RefCell<files::Writer>);

impl GuestFileWriter for DaytonaWriter {
    fn write(&self, data: Vec<u8>) -> Result<(), SandboxError> {
        self.0.borrow().write(&data).map_err(Into::into)
    }

    fn finish(&self) -> Result<(), SandboxError> {
        self.0.borrow_mut().finish().map_err(Into::into)
    }
}

struct Daytona;

impl Api for Daytona {
    type Sandbox = DaytonaSandbox;
    type FileReader = DaytonaReader;
    type FileWriter = DaytonaWriter;
}

impl Lifecycle for Daytona {
    fn info() -> ConnectorInfo {
        lifecycle::info()
    }

    fn create(options: CreateOptions) -> Result<SandboxHandle, SandboxError> {
        lifecycle::create(options).map(SandboxHandle::new)
    }

    fn connect(id: String) -> Result<SandboxHandle, SandboxError> {
        lifecycle::connect(&id).map(SandboxHandle::new)
    }

    fn delete(id: String) -> Result<(), SandboxError> {
        lifecycle::delete(&id)
    }

    fn list(labels: Vec<(String, String)>) -> Result<Vec<SandboxSummary>, SandboxError> {
        lifecycle::list(&labels)
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, SandboxError> {
        volumes::list()
    }

    fn create_volume(name: String) -> Result<VolumeInfo, SandboxError> {
        volumes::create(&name)
    }

    fn delete_volume(name: String) -> Result<(), SandboxError> {
        volumes::delete(&name)
    }
}

export!(Daytona);
