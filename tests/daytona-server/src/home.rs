//! Daytona's sandboxes live at `/home/daytona`. Under bubblewrap the
//! server's local sandboxes are mounted there for real; without it they can
//! only be directories somewhere on this machine. So that the server answers
//! as Daytona does either way, [`HomeMapped`] maps the path: `/home/daytona`
//! in requests (file paths, a command's text, its cwd and variables) becomes
//! the sandbox's directory, and the directory in answers (output, errors)
//! becomes `/home/daytona` again. Commands still run unisolated, as every
//! local sandbox does without bubblewrap — this is a test server on the
//! developer's own machine.

use std::sync::Arc;

use async_trait::async_trait;
use flue::sandbox::error::{SandboxError, SandboxResult};
use flue::sandbox::{
    Connector, ConnectorInfo, CreateOptions, ExecOutput, ExecRequest, FileReader, FileStat, FileWriter, Sandbox,
    SandboxSummary, VolumeInfo,
};

use crate::HOME;

/// The local connector, its sandboxes seen at [`HOME`].
pub struct HomeMapped {
    inner: Arc<dyn Connector>,
}

impl HomeMapped {
    pub fn new(inner: Arc<dyn Connector>) -> Self {
        HomeMapped { inner }
    }
}

fn wrap(inner: Arc<dyn Sandbox>) -> Arc<dyn Sandbox> {
    let real = inner.workdir().to_string();
    Arc::new(MappedSandbox { inner, real })
}

#[async_trait]
impl Connector for HomeMapped {
    fn info(&self) -> &ConnectorInfo {
        self.inner.info()
    }

    async fn create(&self, options: &CreateOptions) -> SandboxResult<Arc<dyn Sandbox>> {
        // Volume mount paths under /home/daytona are understood by the local
        // connector itself (as paths inside the sandbox).
        Ok(wrap(self.inner.create(options).await?))
    }

    async fn connect(&self, id: &str) -> SandboxResult<Arc<dyn Sandbox>> {
        Ok(wrap(self.inner.connect(id).await?))
    }

    async fn delete(&self, id: &str) -> SandboxResult<()> {
        self.inner.delete(id).await
    }

    async fn list(&self, labels: &[(String, String)]) -> SandboxResult<Vec<SandboxSummary>> {
        self.inner.list(labels).await
    }

    async fn list_volumes(&self) -> SandboxResult<Vec<VolumeInfo>> {
        self.inner.list_volumes().await
    }

    async fn create_volume(&self, name: &str) -> SandboxResult<VolumeInfo> {
        self.inner.create_volume(name).await
    }

    async fn delete_volume(&self, name: &str) -> SandboxResult<()> {
        self.inner.delete_volume(name).await
    }
}

/// One sandbox, its directory (`real`) seen at [`HOME`].
struct MappedSandbox {
    inner: Arc<dyn Sandbox>,
    real: String,
}

impl MappedSandbox {
    /// A path as the local sandbox knows it.
    fn inward(&self, path: &str) -> String {
        match flue::sandbox::paths::strip_root(HOME, path) {
            Some("") => self.real.clone(),
            Some(rest) => format!("{}/{rest}", self.real),
            None => path.to_string(),
        }
    }

    /// Text (a command, a variable) with [`HOME`] written as the directory.
    fn inward_text(&self, text: &str) -> String {
        text.replace(HOME, &self.real)
    }

    /// Text (output, an error) with the directory written as [`HOME`].
    fn outward_text(&self, text: &str) -> String {
        text.replace(&self.real, HOME)
    }

    fn outward<T>(&self, result: SandboxResult<T>) -> SandboxResult<T> {
        result.map_err(|err| SandboxError::new(err.kind, self.outward_text(&err.message)))
    }
}

#[async_trait]
impl Sandbox for MappedSandbox {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn workdir(&self) -> &str {
        HOME
    }

    fn connector(&self) -> &str {
        self.inner.connector()
    }

    async fn read_file(&self, path: &str, max_bytes: u64) -> SandboxResult<Vec<u8>> {
        self.outward(self.inner.read_file(&self.inward(path), max_bytes).await)
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> SandboxResult<()> {
        self.outward(self.inner.write_file(&self.inward(path), data).await)
    }

    async fn stat(&self, path: &str) -> SandboxResult<FileStat> {
        self.outward(self.inner.stat(&self.inward(path)).await)
    }

    async fn readdir(&self, path: &str) -> SandboxResult<Vec<String>> {
        self.outward(self.inner.readdir(&self.inward(path)).await)
    }

    async fn exists(&self, path: &str) -> SandboxResult<bool> {
        self.outward(self.inner.exists(&self.inward(path)).await)
    }

    async fn mkdir(&self, path: &str, recursive: bool) -> SandboxResult<()> {
        self.outward(self.inner.mkdir(&self.inward(path), recursive).await)
    }

    async fn rm(&self, path: &str, recursive: bool, force: bool) -> SandboxResult<()> {
        self.outward(self.inner.rm(&self.inward(path), recursive, force).await)
    }

    async fn exec(&self, request: &ExecRequest) -> SandboxResult<ExecOutput> {
        let request = ExecRequest {
            command: self.inward_text(&request.command),
            cwd: self.inward(&request.cwd),
            env: request.env.iter().map(|(k, v)| (k.clone(), self.inward_text(v))).collect(),
            timeout: request.timeout,
        };
        let output = self.outward(self.inner.exec(&request).await)?;
        Ok(ExecOutput {
            stdout: self.outward_text(&output.stdout),
            stderr: self.outward_text(&output.stderr),
            ..output
        })
    }

    async fn open_read(&self, path: &str, offset: u64) -> SandboxResult<Box<dyn FileReader>> {
        self.outward(self.inner.open_read(&self.inward(path), offset).await)
    }

    async fn open_write(&self, path: &str) -> SandboxResult<Box<dyn FileWriter>> {
        self.outward(self.inner.open_write(&self.inward(path)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_text_map_both_ways() {
        let sandbox = MappedSandbox { inner: Arc::new(Dummy), real: "/tmp/s/local-1".into() };
        assert_eq!(sandbox.inward("/home/daytona"), "/tmp/s/local-1");
        assert_eq!(sandbox.inward("/home/daytona/a/b"), "/tmp/s/local-1/a/b");
        assert_eq!(sandbox.inward("/home/daytonax"), "/home/daytonax");
        assert_eq!(sandbox.inward("/etc/hosts"), "/etc/hosts");
        assert_eq!(
            sandbox.inward_text("cat /home/daytona/f > /home/daytona/g"),
            "cat /tmp/s/local-1/f > /tmp/s/local-1/g"
        );
        assert_eq!(sandbox.outward_text("/tmp/s/local-1/project\n"), "/home/daytona/project\n");
    }

    struct Dummy;

    #[async_trait]
    impl Sandbox for Dummy {
        fn id(&self) -> &str {
            "dummy"
        }
        fn workdir(&self) -> &str {
            "/tmp/s/local-1"
        }
        fn connector(&self) -> &str {
            "local"
        }
        async fn read_file(&self, _: &str, _: u64) -> SandboxResult<Vec<u8>> {
            unimplemented!()
        }
        async fn write_file(&self, _: &str, _: &[u8]) -> SandboxResult<()> {
            unimplemented!()
        }
        async fn stat(&self, _: &str) -> SandboxResult<FileStat> {
            unimplemented!()
        }
        async fn readdir(&self, _: &str) -> SandboxResult<Vec<String>> {
            unimplemented!()
        }
        async fn exists(&self, _: &str) -> SandboxResult<bool> {
            unimplemented!()
        }
        async fn mkdir(&self, _: &str, _: bool) -> SandboxResult<()> {
            unimplemented!()
        }
        async fn rm(&self, _: &str, _: bool, _: bool) -> SandboxResult<()> {
            unimplemented!()
        }
        async fn exec(&self, _: &ExecRequest) -> SandboxResult<ExecOutput> {
            unimplemented!()
        }
        async fn open_read(&self, _: &str, _: u64) -> SandboxResult<Box<dyn FileReader>> {
            unimplemented!()
        }
        async fn open_write(&self, _: &str) -> SandboxResult<Box<dyn FileWriter>> {
            unimplemented!()
        }
    }
}
