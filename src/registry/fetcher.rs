//! A handle's registry thread: fetches and compiles the schemas its consumer thread asks for, one at a
//! time, so that a slow or unreachable registry holds up only the records that need a schema it does not
//! have yet ([`super::decode`]), never the consumer thread itself.
//!
//! Compiled schemas are kept per process by (registry, schema id) for the registry's `ttl` ([`cached`]);
//! every handle of the worker with the same registry settings uses them. The settings include the
//! credentials: a configuration whose credentials the registry refuses is never served a schema that
//! another configuration fetched.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use parking_lot::Mutex;

use super::client::{Client, FailureKind, FetchError};
use super::config::Registry;
use super::{compile, Compiled};

/// What a fetch gave: the compiled schema, or why there is none.
pub type Fetched = Result<Arc<Compiled>, FetchError>;

/// The process's compiled schemas by (registry, id), with when each was fetched.
static CACHE: Lazy<Mutex<HashMap<(Registry, u32), (Arc<Compiled>, Instant)>>> = Lazy::new(Default::default);

/// The compiled schema of `id` at `registry`, with when it was fetched, when that was within the
/// registry's `ttl` (ttl unset: ever, as an id's schema never changes).
pub fn cached(registry: &Registry, id: u32) -> Option<(Arc<Compiled>, Instant)> {
    let cache = CACHE.lock();
    let (compiled, at) = cache.get(&(registry.clone(), id))?;
    fresh(registry, *at).then(|| (Arc::clone(compiled), *at))
}

/// Whether a schema of `registry` fetched `at` may still be used.
pub fn fresh(registry: &Registry, at: Instant) -> bool {
    registry.ttl.is_none_or(|ttl| at.elapsed() <= ttl)
}

/// The consumer thread's end of a registry thread. Dropping it ends the thread once its current fetch
/// is done.
pub struct Fetcher {
    requests: Sender<(usize, u32)>,
    results: Receiver<(usize, u32, Fetched)>,
}

impl Fetcher {
    /// Starts the thread serving `registries` (a request names one by its index).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(registries: Vec<Registry>) -> std::io::Result<Fetcher> {
        let (requests, incoming) = mpsc::channel::<(usize, u32)>();
        let (outgoing, results) = mpsc::channel();
        std::thread::Builder::new().name("cc-registry".into()).spawn(move || {
            let mut clients: Vec<Client> = registries.iter().map(Client::new).collect();
            for (index, id) in incoming {
                let registry = &registries[index];
                let client = &mut clients[index];
                // another handle of this worker may have fetched it meanwhile; a panic in a decoder's
                // library fails this schema, not the thread
                let fetched = crate::guard::catch(|| match cached(registry, id) {
                    Some((compiled, _)) => Ok(compiled),
                    None => fetch(client, registry, id),
                })
                .unwrap_or_else(|panic| {
                    Err(FetchError { cause: format!("schema {id}: internal error: {panic}"), kind: FailureKind::Record })
                });
                if outgoing.send((index, id, fetched)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Fetcher { requests, results })
    }

    /// Asks for the schema `id` of registry `index`; its result comes from [`Fetcher::results`].
    pub fn request(&self, index: usize, id: u32) {
        // the thread only ends when this end is dropped (or it panicked: the request then fails
        // below, when no result ever comes, see `decode`)
        let _ = self.requests.send((index, id));
    }

    /// The results that arrived since the last call.
    pub fn results(&self) -> impl Iterator<Item = (usize, u32, Fetched)> + '_ {
        self.results.try_iter()
    }

    /// Waits up to `timeout` for a result.
    pub fn wait(&self, timeout: Duration) -> Option<(usize, u32, Fetched)> {
        self.results.recv_timeout(timeout).ok()
    }
}

fn fetch(client: &mut Client, registry: &Registry, id: u32) -> Fetched {
    let schema = client.schema(id).map_err(|e| FetchError { cause: format!("schema {id}: {}", e.cause), ..e })?;
    let compiled = compile(&schema).map_err(|e| FetchError {
        cause: format!("schema {id} of {}: {e}", client.name()),
        kind: FailureKind::Record,
    })?;
    let compiled = Arc::new(compiled);
    CACHE.lock().insert((registry.clone(), id), (Arc::clone(&compiled), Instant::now()));
    Ok(compiled)
}
