//! `flue store migrate`: bring a run store's schema up to this flue's
//! ahead of the servers (they also do it when they start).

use clap::{Args, Subcommand};

use super::{Failure, out, usage};
use crate::serve::store::{RunStore, StoreLocation, postgres};

/// `flue store` arguments.
#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Apply the schema migrations this flue knows to the store (each
    /// once; servers starting at the same time wait for one another).
    Migrate {
        /// The store: a PostgreSQL URL, or an SQLite file.
        #[arg(long, value_name = "FILE|URL", env = "FLUE_STORE", hide_env_values = true)]
        store: String,
    },
}

/// Run `flue store`.
pub fn store(args: StoreArgs) -> Result<(), Failure> {
    match args.action {
        Action::Migrate { store } => match StoreLocation::parse(&store) {
            StoreLocation::Postgres(url) => {
                let applied = postgres::migrate_at(&url)?;
                let shown = postgres::without_password(&url);
                if applied.is_empty() {
                    out!("{shown}: up to date");
                } else {
                    let versions: Vec<String> = applied.iter().map(i64::to_string).collect();
                    out!("{shown}: applied migration(s) {}", versions.join(", "));
                }
                Ok(())
            }
            location @ StoreLocation::File(_) => {
                RunStore::attach(location.clone(), usize::MAX, false).map_err(usage)?;
                out!("{location}: up to date");
                Ok(())
            }
        },
    }
}
