//! A connector's store data, and the imports that are not capabilities
//! (`types`, `log`). The capabilities (`http`, `config`) are implemented in
//! [`crate::capability`], on this same state.

use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::agent::flue::sandbox::{log, types};
use crate::capability::ConnectorGrants;
use crate::events::EventLog;
use crate::runtime::{HasStoreBase, StoreBase};

/// The data of a connector's store.
pub struct ConnectorState {
    pub(crate) wasi: WasiCtx,
    pub(crate) base: StoreBase,
    /// The name it is known by (its file name).
    pub(crate) name: String,
    pub(crate) grants: ConnectorGrants,
    pub(crate) events: EventLog,
}

impl crate::capability::CapabilityView for ConnectorState {
    fn capabilities(&mut self) -> crate::capability::Capabilities<'_> {
        crate::capability::Capabilities { table: &mut self.base.table, grants: &self.grants }
    }
}

impl HasStoreBase for ConnectorState {
    fn base(&mut self) -> &mut StoreBase {
        &mut self.base
    }
}

impl WasiView for ConnectorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.base.table }
    }
}

impl types::Host for ConnectorState {}

impl log::Host for ConnectorState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let message = self.grants.http.redact(&message);
        self.events.log(&format!("connector {}", self.name), level.into(), message);
        Ok(())
    }
}
