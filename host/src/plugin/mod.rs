//! Probe components: loading them once, and running one check in a fresh,
//! bounded instance.
//!
//! There is one [`PluginRuntime`] per process: one wasmtime `Engine` with epoch
//! interruption and a pooling instance allocator, one `Linker` with WASI
//! preview 2 and the probehost capabilities, an epoch ticker thread, and the
//! compiled-component cache. Each configured probe becomes a [`Plugin`]: an
//! `InstancePre` built once, plus its grants and bounds. Each check gets a
//! fresh `Store` with a memory limiter and a deadline that the epoch enforces
//! even on a guest that never returns to the host.
//!
//! The pool keeps each instance's memory, tables and stack mapped between
//! checks (reset, never shared), so a check costs no `mmap`/`munmap` and no
//! page faults on memory the last instance of the same component touched. A
//! check takes one of the pool's slots for as long as its instance lives,
//! waiting for one within its own deadline; there are slots for two checks of
//! every configured probe at once. A component larger than a slot allows
//! (more memories, tables or core instances) runs from a second engine that
//! allocates on demand, as every component did before the pool.
//!
//! This module knows nothing of HTTP or of how results are combined; see
//! [`crate::readiness`].

mod bindings;
mod cache;
mod host;
mod net;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use self::bindings::probehost::probe::types;
use self::bindings::{Probe, ProbePre};
pub use self::cache::{ArtifactCache, Origin};
pub use self::host::Grants;
use self::host::HostState;
pub use self::net::{GrantHost, HttpOrigin, NetworkGrant};

/// How often the epoch advances: the granularity of deadlines, and how often a
/// long-running guest yields its worker thread.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// What one pool slot holds: enough for every bundled probe and for
/// componentize-py's Python probes (14 core instances, 1 memory, 2 tables).
const SLOT_CORE_INSTANCES: u32 = 32;
const SLOT_MEMORIES: u32 = 2;
const SLOT_TABLES: u32 = 4;
const SLOT_TABLE_ELEMENTS: usize = 100_000;
/// Linear memory reset in place (rather than returned to the kernel) when an
/// instance ends. None: measured with `PROBEHOST_BENCH=check`, resetting a
/// bundled probe's first 64 KiB in place costs as much as the page faults it
/// saves, and its first MiB costs 19 µs more per check.
const KEEP_RESIDENT: usize = 0;
/// Pool slots when the number of probes is not known (tools, tests).
pub const DEFAULT_SLOTS: u32 = 8;

/// Longest not-ready message kept from a probe.
pub const MAX_MESSAGE: usize = 4096;
/// The WIT world every probe component implements.
pub const WORLD: &str = "probehost:probe/probe@0.1.0";

/// The probes compiled into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Database,
    Memcached,
    Migrations,
}

impl Builtin {
    pub const ALL: [Builtin; 3] = [Builtin::Database, Builtin::Memcached, Builtin::Migrations];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Database => "database",
            Builtin::Memcached => "memcached",
            Builtin::Migrations => "migrations",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    fn wasm(self) -> &'static [u8] {
        match self {
            Builtin::Database => include_bytes!(env!("PROBEHOST_BUILTIN_DATABASE")),
            Builtin::Memcached => include_bytes!(env!("PROBEHOST_BUILTIN_MEMCACHED")),
            Builtin::Migrations => include_bytes!(env!("PROBEHOST_BUILTIN_MIGRATIONS")),
        }
    }
}

/// The example components built beside the bundled ones: located, never
/// embedded. For the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod examples {
    /// The HTTP probe (`plugins/http`).
    pub const HTTP_PROBE: &str = env!("PROBEHOST_PLUGIN_HTTP");
}

/// Where a probe's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// `builtin:NAME`
    Builtin(Builtin),
    /// A `.wasm` file.
    File(PathBuf),
}

impl std::fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentSource::Builtin(b) => write!(f, "builtin:{}", b.name()),
            ComponentSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotAComponent(&'static str),
    #[error("not a valid WebAssembly component: {}", one_line(.0))]
    Invalid(wasmtime::Error),
    #[error("does not implement the probe world ({WORLD}): {}", one_line(.0))]
    WrongWorld(wasmtime::Error),
}

/// An error chain on one line, with wasmparser's multi-line dumps folded.
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Recognise files that are not components before handing them to wasmtime,
/// whose messages for these cases are hard to read.
fn check_header(wasm: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    match wasm.get(..8) {
        Some(header) if header.starts_with(MAGIC) => match header[4..8] {
            // Core module: version 1, layer 0.
            [1, 0, 0, 0] => Err(LoadError::NotAComponent(
                "is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target \
                 (or wrap it with `wasm-tools component new`)",
            )),
            _ => Ok(()),
        },
        _ => Err(LoadError::NotAComponent("is not a WebAssembly file")),
    }
}

/// The process-wide wasm runtime.
pub struct PluginRuntime {
    /// Where components run: the pooling engine (allocating on demand where
    /// the pool's address space is refused).
    pooled: Linked,
    /// One per instance the pool can hold at once.
    slots: Arc<Semaphore>,
    /// The on-demand engine, made for the first component that does not fit
    /// a pool slot.
    on_demand: std::sync::OnceLock<Linked>,
    /// The engine that compiles, made when a component first needs compiling:
    /// one of its own with the same configuration (so what it compiles loads
    /// into `pooled`), so that Cranelift's reusable compilation state
    /// (megabytes) goes when this runtime does, after start-up, rather than
    /// living as long as the components.
    compiler: std::sync::Mutex<Option<Engine>>,
    /// The configuration shared by every engine here, allocating on demand.
    config: wasmtime::Config,
    cache: Option<ArtifactCache>,
}

/// An engine with its linker and its epoch ticker.
struct Linked {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Arc<EpochTicker>,
}

impl Linked {
    fn new(config: &wasmtime::Config) -> wasmtime::Result<Linked> {
        let engine = Engine::new(config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        limit_name_lookups(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        Probe::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        Ok(Linked {
            engine,
            linker,
            ticker,
        })
    }
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Create the engines and linker, with [`DEFAULT_SLOTS`] pool slots. With
    /// `cache_dir`, compiled components are cached there; a directory that is
    /// unusable or unsafe is reported and the runtime compiles in memory
    /// instead.
    pub fn new(cache_dir: Option<&Path>) -> anyhow::Result<PluginRuntime> {
        PluginRuntime::with_slots(cache_dir, DEFAULT_SLOTS)
    }

    /// The runtime for `probes` configured probes: pool slots for three
    /// instances of each at once (the one prepared for the next check, an
    /// evaluation's, and the end of the one before it).
    pub fn for_probes(cache_dir: Option<&Path>, probes: usize) -> anyhow::Result<PluginRuntime> {
        let slots = u32::try_from(probes.saturating_mul(3)).unwrap_or(u32::MAX);
        PluginRuntime::with_slots(cache_dir, slots.max(DEFAULT_SLOTS))
    }

    fn with_slots(cache_dir: Option<&Path>, slots: u32) -> anyhow::Result<PluginRuntime> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Compile on the calling thread. In parallel, Cranelift runs on a
        // pool of threads that then idle for the life of the process, and
        // what it freed stays resident in their allocator arenas (2.8 MiB
        // after start-up, measured with the bundled probes): `malloc_trim`
        // gives back the top of the main arena only.
        config.parallel_compilation(false);

        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_stacks(slots)
            .max_core_instances_per_component(SLOT_CORE_INSTANCES)
            .total_core_instances(slots.saturating_mul(SLOT_CORE_INSTANCES))
            .max_memories_per_component(SLOT_MEMORIES)
            .total_memories(slots.saturating_mul(SLOT_MEMORIES))
            .max_tables_per_component(SLOT_TABLES)
            .total_tables(slots.saturating_mul(SLOT_TABLES))
            .table_elements(SLOT_TABLE_ELEMENTS)
            .linear_memory_keep_resident(KEEP_RESIDENT);
        let mut pooled_config = config.clone();
        pooled_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // The pool reserves its address space up front (about 4 GiB per
        // memory slot, never touched unless used); where that is refused (a
        // `ulimit -v`), instances are allocated on demand, as before the pool.
        let pooled = match Linked::new(&pooled_config) {
            Ok(linked) => linked,
            Err(e) => {
                tracing::warn!(
                    "no instance pool, so instances are allocated on demand: {}",
                    one_line(&e)
                );
                Linked::new(&config)?
            }
        };

        let cache = cache_dir.and_then(|dir| match ArtifactCache::open(dir, &pooled.engine) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!("not caching compiled components: {e}");
                None
            }
        });
        Ok(PluginRuntime {
            pooled,
            slots: Arc::new(Semaphore::new(slots as usize)),
            on_demand: std::sync::OnceLock::new(),
            compiler: std::sync::Mutex::new(None),
            config,
            cache,
        })
    }

    /// The cache in use, if any.
    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// Compile (or map from the cache) a component, without linking it.
    fn compile(&self, source: &ComponentSource) -> Result<(Component, Origin), LoadError> {
        let owned;
        let wasm: &[u8] = match source {
            ComponentSource::Builtin(b) => b.wasm(),
            ComponentSource::File(path) => {
                owned = std::fs::read(path).map_err(|source| LoadError::Read {
                    path: path.clone(),
                    source,
                })?;
                &owned
            }
        };
        check_header(wasm)?;
        let load = |code: &[u8]| self.deserialize(code);
        match &self.cache {
            Some(cache) => cache.load_with(load, || self.compiler(), wasm),
            None => self
                .compiler()
                .and_then(|compiler| cache::compile(load, &compiler, wasm))
                .map(|c| (c, Origin::Compiled)),
        }
        .map_err(LoadError::Invalid)
    }

    /// Load machine code into the pooling engine, or into the on-demand one if
    /// the component does not fit a pool slot.
    fn deserialize(&self, code: &[u8]) -> wasmtime::Result<Component> {
        let too_large = match cache::deserialize_bytes(&self.pooled.engine, code) {
            Ok(component) => return Ok(component),
            Err(e) => e,
        };
        let on_demand = match self.on_demand.get() {
            Some(linked) => linked,
            None => {
                let linked = Linked::new(&self.config)?;
                self.on_demand.get_or_init(|| linked)
            }
        };
        let component = cache::deserialize_bytes(&on_demand.engine, code)?;
        tracing::info!(
            "a component does not fit a pool slot, so its instances are allocated on demand: {}",
            one_line(&too_large)
        );
        Ok(component)
    }

    /// The engine and linker `component` was loaded into.
    fn linked(&self, component: &Component) -> &Linked {
        match self.on_demand.get() {
            Some(linked) if Engine::same(component.engine(), &linked.engine) => linked,
            _ => &self.pooled,
        }
    }

    /// The compiling engine ([`PluginRuntime::compiler`]'s field).
    fn compiler(&self) -> wasmtime::Result<Engine> {
        let mut slot = self.compiler.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = &*slot {
            return Ok(engine.clone());
        }
        let engine = Engine::new(&self.config)?;
        *slot = Some(engine.clone());
        Ok(engine)
    }

    /// What a component is: whether it implements the probe world, what it
    /// imports and exports, and which grants its imports call for.
    pub fn inspect(&self, source: &ComponentSource) -> Result<Inspection, LoadError> {
        let (component, _) = self.compile(source)?;
        let linked = self.linked(&component);
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&linked.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&linked.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let probe = linked
            .linker
            .instantiate_pre(&component)
            .and_then(ProbePre::new)
            .map(drop)
            .map_err(|e| one_line(&e));
        Ok(Inspection {
            imports,
            exports,
            probe,
        })
    }

    /// Load and link a component, ready to instantiate per check.
    pub fn load(&self, source: &ComponentSource) -> Result<Loaded, LoadError> {
        let started = Instant::now();
        let (component, origin) = self.compile(source)?;
        let linked = self.linked(&component);
        let pooled = std::ptr::eq(linked, &self.pooled);
        let pre = linked
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::WrongWorld)?;
        let pre = ProbePre::new(pre).map_err(LoadError::WrongWorld)?;
        let elapsed = started.elapsed();
        match origin {
            Origin::Compiled => tracing::info!(component = %source, ?elapsed, "component compiled"),
            Origin::Cached => {
                tracing::debug!(component = %source, ?elapsed, "component loaded from cache");
            }
        }
        Ok(Loaded {
            pre,
            origin,
            slots: pooled.then(|| self.slots.clone()),
            ticker: linked.ticker.clone(),
        })
    }
}

/// A component that loaded and links against the probe world.
pub struct Loaded {
    pre: ProbePre<HostState>,
    origin: Origin,
    /// The pool's slots, if it runs from the pool.
    slots: Option<Arc<Semaphore>>,
    /// Deadlines only work while the epoch advances.
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Whether the machine code was compiled now or mapped from the cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }
}

/// The HTTP request behind a check, as a probe sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// How one check of one probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Ready,
    /// The probe answered not ready (its status is already clamped to 400–599).
    NotReady {
        message: String,
        status: u16,
    },
    /// The probe ran past its deadline and was stopped.
    TimedOut,
    /// The probe grew its memory past its limit and was stopped.
    MemoryExceeded {
        limit: usize,
    },
    /// The probe trapped (a panic, an `unreachable`, a host fault).
    Crashed(String),
}

/// A configured probe: its component, grants and bounds.
pub struct Plugin {
    name: Arc<str>,
    pre: ProbePre<HostState>,
    slots: Option<Arc<Semaphore>>,
    grants: Arc<Grants>,
    timeout: Duration,
    memory_limit: usize,
    /// The next check's instance, made ahead of it by [`Plugin::prepare`].
    next: std::sync::Mutex<Option<Prepared>>,
    _ticker: Arc<EpochTicker>,
}

/// An instance made ahead of its check, in a store of its own, with the pool
/// slot that holds it. It serves exactly one check.
struct Prepared {
    store: Store<HostState>,
    probe: Probe,
    slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("memory_limit", &self.memory_limit)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn new(
        name: &str,
        loaded: Loaded,
        grants: Grants,
        timeout: Duration,
        memory_limit: usize,
    ) -> Plugin {
        Plugin {
            name: name.into(),
            pre: loaded.pre,
            slots: loaded.slots,
            grants: Arc::new(grants),
            timeout,
            memory_limit,
            next: std::sync::Mutex::new(None),
            _ticker: loaded.ticker,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The probe's own deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Run one check in a fresh instance. It ends by `started` plus the probe's
    /// timeout, or by `deadline`, whichever comes first, even if the guest loops.
    /// `started` is when the evaluation began, so time spent waiting to be
    /// scheduled counts against the probe's timeout too.
    pub async fn check(
        &self,
        request: Option<&ProbeRequest>,
        started: Instant,
        deadline: Instant,
    ) -> CheckOutcome {
        self.check_then_release(request, started, deadline).await.0
    }

    /// [`Plugin::check`], handing back the check's instance and pool slot
    /// instead of releasing them, so the caller can make the outcome known
    /// first and release them after: tearing an instance down (its memory is
    /// decommitted) is not on the path of the answer.
    pub async fn check_then_release(
        &self,
        request: Option<&ProbeRequest>,
        started: Instant,
        deadline: Instant,
    ) -> (CheckOutcome, Spent) {
        let deadline = deadline.min(started + self.timeout);
        let prepared = self.next.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (mut store, made, slot) = match prepared {
            Some(Prepared {
                mut store,
                probe,
                slot,
            }) => {
                let reserve = reserve(deadline.saturating_duration_since(Instant::now()));
                store.data_mut().arm(deadline, reserve);
                (store, Some(probe), slot)
            }
            None => {
                // A pool slot for the instance, held until the store is gone
                // (both go into the `Spent`, which drops the store first).
                // Waiting for one counts against the deadline like any other
                // wait.
                let slot = match &self.slots {
                    Some(slots) => match tokio::time::timeout_at(
                        deadline.into(),
                        slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(slot)) => Some(slot),
                        _ => return (CheckOutcome::TimedOut, Spent::default()),
                    },
                    None => None,
                };
                let reserve = reserve(deadline.saturating_duration_since(Instant::now()));
                (self.store(deadline, reserve), None, slot)
            }
        };
        // The epoch deadline counts from now, however long a prepared
        // instance waited for its check.
        store.set_epoch_deadline(1);

        let request = request.map(|r| types::Request {
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            headers: r.headers.clone(),
        });
        let run = async {
            let probe = match made {
                Some(probe) => probe,
                None => self.pre.instantiate_async(&mut store).await?,
            };
            probe.call_ready(&mut store, request.as_ref()).await
        };
        // The epoch stops a guest that computes; this stops one that is waiting on
        // the host (whose calls are bounded too, so this is a second line).
        let result = tokio::time::timeout_at((deadline + EPOCH_TICK * 4).into(), run).await;

        let outcome = match result {
            Err(_) => CheckOutcome::TimedOut,
            Ok(Ok(Ok(()))) => CheckOutcome::Ready,
            Ok(Ok(Err(not_ready))) => CheckOutcome::NotReady {
                message: self
                    .grants
                    .redact(host::truncate(&not_ready.message, MAX_MESSAGE)),
                status: if (400..=599).contains(&not_ready.status) {
                    not_ready.status
                } else {
                    503
                },
            },
            Ok(Err(error)) => {
                let state = store.data();
                if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
                    CheckOutcome::TimedOut
                } else if state.memory_exceeded.is_some() {
                    CheckOutcome::MemoryExceeded {
                        limit: self.memory_limit,
                    }
                } else {
                    // Prefer the guest's own account (the SDK logs a panic just
                    // before it traps; other toolchains write to stderr) over
                    // wasmtime's description of the trap.
                    let said = state.log.panic.clone().or_else(|| state.stderr.last_line());
                    let trap = match error.downcast_ref::<wasmtime::Trap>() {
                        Some(trap) => format!("wasm trap: {trap}"),
                        None => error.root_cause().to_string(),
                    };
                    CheckOutcome::Crashed(self.grants.redact(&said.unwrap_or(trap)))
                }
            }
        };
        let dropped = store.data().log.dropped;
        if dropped > 0 {
            tracing::warn!(probe = %self.name, dropped, "probe wrote too many log lines; dropped the rest");
        }
        (
            outcome,
            Spent {
                _store: Some(store),
                _slot: slot,
            },
        )
    }

    /// Make the next check's instance now, so that instantiating it (and
    /// creating its store) is not on the path of that check's answer. Call it
    /// after a check's result is out. The instance still serves exactly one
    /// check, in a store of its own; what it did while being made (guest start
    /// code) is bounded by the probe's timeout and epoch like a check. Does
    /// nothing if an instance is already prepared or no pool slot is free (a
    /// check then makes its own); a failure is left for the check to meet and
    /// report.
    pub async fn prepare(&self) {
        if self
            .next
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let slot = match &self.slots {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => return,
            },
            None => None,
        };
        let deadline = Instant::now() + self.timeout;
        let mut store = self.store(deadline, reserve(self.timeout));
        store.set_epoch_deadline(1);
        let made = tokio::time::timeout_at(
            (deadline + EPOCH_TICK * 4).into(),
            self.pre.instantiate_async(&mut store),
        )
        .await;
        let Ok(Ok(probe)) = made else { return };
        let prepared = Prepared { store, probe, slot };
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if next.is_none() {
            *next = Some(prepared);
        }
    }

    /// A fresh store for one instance, ending at `deadline`.
    fn store(&self, deadline: Instant, reserve: Duration) -> Store<HostState> {
        let state = HostState::new(
            self.name.clone(),
            self.grants.clone(),
            deadline,
            reserve,
            self.memory_limit,
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| state);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Yield so other checks on this worker thread make progress.
                // tokio's yield_now goes to the back of the queue; a plain
                // self-wake would take the worker's LIFO slot and run again at
                // once, starving the other checks.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }
}

/// How long before its deadline a check's host calls end, so the probe can
/// still answer with its own message: a tenth of the time it has, within
/// 5–50 ms.
fn reserve(allowed: Duration) -> Duration {
    (allowed / 10).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

/// What a finished check leaves behind: its store (the instance and its
/// memory) and the pool slot that holds them. Dropping it releases both, the
/// store first (fields drop in declaration order). The default holds nothing.
#[derive(Default)]
pub struct Spent {
    _store: Option<Store<HostState>>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spent").finish_non_exhaustive()
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::Builder::new()
            .name("probehost-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Replace WASI's `resolve-addresses` with one that answers only for the host
/// names the probe's `network` grant lists (and for IP addresses written out),
/// so a probe cannot send arbitrary names to the resolver.
///
/// The instance name must be the exact version wasmtime-wasi defines (its
/// newest `wasi:sockets` 0.2.x): components importing any 0.2.x version are
/// linked to that one. After a wasmtime-wasi upgrade that moves the version,
/// the test `name_lookups_reach_the_resolver_only_for_granted_names` fails
/// until this name follows it.
fn limit_name_lookups(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{Host as _, ResolveAddressStream};
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Network};
    use wasmtime_wasi::sockets::WasiSocketsView;

    type Answer = (Result<Resource<ResolveAddressStream>, ErrorCode>,);
    linker.allow_shadowing(true);
    linker
        .instance("wasi:sockets/ip-name-lookup@0.2.12")?
        .func_wrap(
            "resolve-addresses",
            |mut store: wasmtime::StoreContextMut<'_, HostState>,
             (network, name): (Resource<Network>, String)|
             -> wasmtime::Result<Answer> {
                if !store.data().may_resolve(&name) {
                    return Ok((Err(ErrorCode::PermanentResolverFailure),));
                }
                let mut sockets = store.data_mut().sockets();
                match sockets.resolve_addresses(network, name) {
                    Ok(stream) => Ok((Ok(stream),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What `probehost plugin check` reports about a component.
#[derive(Debug)]
pub struct Inspection {
    /// Imported interfaces (`wasi:sockets/tcp@0.2.9`, `probehost:probe/sql@0.1.0`, ...).
    pub imports: Vec<String>,
    /// Exported functions and interfaces.
    pub exports: Vec<String>,
    /// `Ok` when it implements the probe world, else why not.
    pub probe: Result<(), String>,
}

/// What an import lets a probe do, and the grant it needs to do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub what: &'static str,
    /// The `[probes.NAME]` key that grants it, if any can.
    pub grant: Option<&'static str>,
}

impl Inspection {
    /// The capability behind an import, for the interfaces probes use.
    pub fn capability(import: &str) -> Capability {
        let interface = import.split('@').next().unwrap_or(import);
        let (what, grant) = match interface {
            "probehost:probe/sql" => ("SQL on granted databases", Some("databases")),
            "probehost:probe/memcached" => ("memcached stats of granted caches", Some("caches")),
            "probehost:probe/config" => ("its own settings", Some("config")),
            "probehost:probe/log" => ("log lines", None),
            "probehost:probe/types" => ("shared types", None),
            "wasi:sockets/tcp" | "wasi:sockets/tcp-create-socket" => {
                ("TCP connections to granted addresses", Some("network"))
            }
            "wasi:sockets/ip-name-lookup" => {
                ("name lookups, with a `network` grant", Some("network"))
            }
            "wasi:sockets/udp" | "wasi:sockets/udp-create-socket" => ("UDP: never allowed", None),
            "wasi:sockets/network" | "wasi:sockets/instance-network" => {
                ("the network handle", None)
            }
            "wasi:http/outgoing-handler" => ("HTTP requests to granted origins", Some("http")),
            "wasi:http/types" => ("HTTP types", None),
            "wasi:filesystem/types" | "wasi:filesystem/preopens" => {
                ("files: none are ever available", None)
            }
            "wasi:cli/environment" => ("environment: always empty", None),
            "wasi:cli/stderr" => ("stderr: kept for crash reasons", None),
            "wasi:cli/stdin" => ("stdin: always empty", None),
            "wasi:cli/stdout" => ("stdout: discarded", None),
            "wasi:cli/exit" => ("exit: ends the check as a crash", None),
            "wasi:clocks/monotonic-clock" | "wasi:clocks/wall-clock" => ("clocks", None),
            "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
                ("random numbers", None)
            }
            i if i.starts_with("wasi:io/") => ("streams and polling", None),
            i if i.starts_with("wasi:cli/terminal") => ("terminal queries: never a terminal", None),
            _ => ("not provided by probehost", None),
        };
        Capability { what, grant }
    }

    /// The grant keys this component's imports can use, in a stable order.
    pub fn grants(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = self
            .imports
            .iter()
            .filter_map(|i| Inspection::capability(i).grant)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of `n` core instances, each of a module with one memory:
    /// a component with more memories than a pool slot holds.
    fn component_with_memories(n: u8) -> Vec<u8> {
        let module = [0, b'a', b's', b'm', 1, 0, 0, 0, 5, 3, 1, 0, 1];
        let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
        for _ in 0..n {
            wasm.extend([1, module.len() as u8]);
            wasm.extend(module);
        }
        let mut instances = vec![n];
        for index in 0..n {
            instances.extend([0, index, 0]);
        }
        wasm.extend([2, instances.len() as u8]);
        wasm.extend(instances);
        wasm
    }

    #[test]
    fn a_component_too_large_for_a_pool_slot_loads_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = PluginRuntime::new(None).unwrap();
        let wasm = component_with_memories(SLOT_MEMORIES as u8 + 1);
        let compiled = runtime
            .compiler()
            .unwrap()
            .precompile_component(&wasm)
            .unwrap();
        let refused = cache::deserialize_bytes(&runtime.pooled.engine, &compiled).unwrap_err();
        assert!(format!("{refused:#}").contains("memories"), "{refused:#}");

        let path = dir.path().join("large.wasm");
        std::fs::write(&path, &wasm).unwrap();
        let inspection = runtime.inspect(&ComponentSource::File(path)).unwrap();
        assert!(inspection.probe.is_err(), "it is not a probe, but it loads");
        assert!(runtime.on_demand.get().is_some());

        // One that fits stays in the pool.
        let small = component_with_memories(1);
        let compiled = runtime
            .compiler()
            .unwrap()
            .precompile_component(&small)
            .unwrap();
        let component = runtime.deserialize(&compiled).unwrap();
        assert!(std::ptr::eq(runtime.linked(&component), &runtime.pooled));
    }
}
