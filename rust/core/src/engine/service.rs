//! The engine as a wire-protocol [`Service`]: what `net::server` calls to push data and read
//! results of a shared [`Engine`].
//!
//! This module owns the mapping of engine calls and errors onto the protocol's
//! [`ErrorCode`]s and nothing else. It never touches sockets or frames. It sits above both
//! the engine and `net` (the server knows only the [`Service`] trait), so `net` never depends
//! on the engine.
//!
//! A subscribed query's results go to the remote subscribers: [`Service::poll`] moves them out
//! of the engine. A query is read either locally (`take_output`, Python's `QueryResult`) or
//! remotely, not both: rows taken by one reader are not seen by the other.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::Engine;
use crate::error::Error;
use crate::net::server::{Service, ServiceError};
use crate::net::ErrorCode;

/// A shared engine served over the wire protocol.
#[derive(Clone)]
pub struct EngineService {
    engine: Arc<Mutex<Engine>>,
    /// Set when an engine call panicked (here or by another user of the engine): every later
    /// call fails instead of touching an engine whose state is not trustworthy.
    broken: Arc<AtomicBool>,
}

impl EngineService {
    /// Serves this engine (shared with its other users through the mutex).
    pub fn new(engine: Arc<Mutex<Engine>>) -> Self {
        Self::with_broken_flag(engine, Arc::new(AtomicBool::new(false)))
    }

    /// Serves this engine, sharing the "broken by a panic" flag with its other users (the
    /// Python bindings), so that a panic on either side stops both.
    pub fn with_broken_flag(engine: Arc<Mutex<Engine>>, broken: Arc<AtomicBool>) -> Self {
        EngineService { engine, broken }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Engine) -> crate::error::Result<T>,
        query: bool,
    ) -> Result<T, ServiceError> {
        let unusable = || {
            ServiceError::new(
                ErrorCode::Internal,
                "the engine hit an internal error earlier and can no longer be used",
            )
        };
        if self.broken.load(Ordering::Acquire) {
            return Err(unusable());
        }
        let mut guard = self.engine.lock().map_err(|_| unusable())?;
        match catch_unwind(AssertUnwindSafe(|| f(&mut guard))) {
            Ok(r) => r.map_err(|e| map_error(e, query)),
            Err(_) => {
                self.broken.store(true, Ordering::Release);
                Err(ServiceError::new(
                    ErrorCode::Internal,
                    "internal error in the engine (please report it); it can no longer be used",
                ))
            }
        }
    }
}

/// The wire code of an engine error (`query`: the call was about a query, so an unknown
/// name is an unknown query).
fn map_error(e: Error, query: bool) -> ServiceError {
    let code = match &e {
        Error::UnknownSource(_) => ErrorCode::UnknownSource,
        Error::SchemaMismatch { .. }
        | Error::ColumnNotFound { .. }
        | Error::ColumnType { .. }
        | Error::TimeColumn { .. } => ErrorCode::SchemaMismatch,
        // The engine has no error variant of its own for an unknown query name.
        Error::InvalidPlan(m) if query && m.starts_with("unknown query") => ErrorCode::UnknownQuery,
        Error::Backpressure(_) => ErrorCode::Overloaded,
        _ => ErrorCode::Internal,
    };
    ServiceError::new(code, e.to_string())
}

impl Service for EngineService {
    fn push(&self, source: &str, batches: Vec<RecordBatch>) -> Result<(), ServiceError> {
        // Applied and logged under the engine lock; the wait for the sync happens outside it,
        // so the engine's other users (Python threads) are not held up by this disk wait and
        // their pushes share the sync.
        let (_, pending) = self.with(|e| e.push_seq_deferred(source, &batches, None), false)?;
        if let Some(p) = pending {
            let waited = p.wait();
            if waited.is_err() {
                self.with(|e| e.finish_commit(waited), false)?;
            }
        }
        Ok(())
    }

    fn subscribe(&self, query: &str) -> Result<Option<SchemaRef>, ServiceError> {
        self.with(|e| e.output_schema(query), true)
    }

    fn poll(&self, query: &str) -> Result<Vec<RecordBatch>, ServiceError> {
        self.with(|e| e.take_output(query), true)
    }
}
