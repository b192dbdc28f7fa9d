//! The WASM executor: WASI preview 1 modules and preview 2 components on
//! wasmtime.
//!
//! One engine per sandbox, configured for async execution, epoch
//! interruption and the pooling instance allocator. An epoch ticker thread
//! advances the engine's epoch every [`SandboxConfig::epoch_tick`]; every
//! running store yields to its executor at each tick, so a deadline or a
//! cancellation takes effect within a tick even in a tight loop, and the
//! same `select!` also ends a task that is parked in a host call (a long
//! sleep).
//!
//! Tasks run on tokio's blocking pool (one thread per running task, driving
//! the task's future with `Handle::block_on`), so guest code never occupies
//! the runtime's worker threads.
//!
//! Compiled code is cached by the module's BLAKE3 hash and the engine's
//! compatibility hash (wasmtime version and settings): in memory as a
//! pre-linked `InstancePre`, and on disk as a serialized `.cwasm`, so a
//! second start of the same bytes neither compiles nor links.
//!
//! A module larger than [`SandboxConfig::max_module_bytes`] is refused.
//! Compiling counts toward the task's deadline and can be cancelled: it
//! runs on a thread of its own (one per module being compiled; tasks
//! wanting the same module wait for the same compile) while the task waits
//! for it, its deadline or its cancellation. A task that gives up leaves
//! the compile to finish and fill the cache; no lock is held across a
//! compile, so other tasks never wait on it.
//!
//! Isolation: the guest sees only its arguments, its environment, and three
//! preopened folders (`/inputs` read-only, `/outputs`, `/tmp`). TCP, UDP and
//! name lookup are refused; stdin is empty.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::preview1::WasiP1Ctx;
use wasmtime_wasi::{DirPerms, FilePerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capture::CaptureSink;
use crate::{CacheStats, Report, SandboxConfig, SandboxError, Task, TaskKind, WasmModule};

/// Most table elements a task may grow a table to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Most core instances (and tables) one component may create.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Largest linear memory wasm32 can address.
const WASM32_MAX_MEMORY: u64 = 4 << 30;

pub(crate) struct WasmExecutor {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    _ticker: EpochTicker,
}

struct Shared {
    engine: Engine,
    p1_linker: Linker<P1State>,
    p2_linker: wasmtime::component::Linker<P2State>,
    cache: ModuleCache,
    fuel_enabled: bool,
    max_memory: u64,
    max_module_bytes: u64,
}

impl WasmExecutor {
    pub(crate) fn new(config: &SandboxConfig) -> Result<WasmExecutor, SandboxError> {
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let max_memory = config.max_wasm_memory.min(WASM32_MAX_MEMORY);
        let instances = config.max_wasm_instances.max(1);

        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_memories(instances * 2)
            .max_memories_per_component(2)
            .total_tables(instances * MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_tables_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_stacks(instances)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));

        let mut cfg = Config::new();
        cfg.async_support(true)
            .epoch_interruption(true)
            .consume_fuel(config.fuel)
            .wasm_component_model(true)
            .wasm_threads(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(engine_err)?;

        let mut p1_linker = Linker::new(&engine);
        wasmtime_wasi::preview1::add_to_linker_async(&mut p1_linker, |s: &mut P1State| &mut s.wasi)
            .map_err(engine_err)?;
        let mut p2_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2_linker).map_err(engine_err)?;

        let cache = ModuleCache::new(&engine, &config.cache_dir, config.module_cache_entries)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(WasmExecutor {
            shared: Arc::new(Shared {
                engine,
                p1_linker,
                p2_linker,
                cache,
                fuel_enabled: config.fuel,
                max_memory,
                max_module_bytes: config.max_module_bytes,
            }),
            slots: Arc::new(Semaphore::new(instances as usize)),
            _ticker: ticker,
        })
    }

    pub(crate) fn max_module_bytes(&self) -> u64 {
        self.shared.max_module_bytes
    }

    pub(crate) fn cache_stats(&self) -> CacheStats {
        let c = &self.shared.cache.stats;
        CacheStats {
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            disk_loads: c.disk_loads.load(Ordering::Relaxed),
            compiles: c.compiles.load(Ordering::Relaxed),
        }
    }

    /// The engine HTTP functions share with tasks.
    pub(crate) fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// The instance slots HTTP functions share with tasks (the pool's size).
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Largest linear memory any instance may have.
    pub(crate) fn max_memory(&self) -> u64 {
        self.shared.max_memory
    }

    /// Sets a new store's epoch deadline (yield at every tick) and fuel.
    pub(crate) fn prepare<T>(&self, store: &mut Store<T>) -> wasmtime::Result<()> {
        prepare_store(store, self.shared.fuel_enabled, None)
    }

    /// A component's compiled code, from the disk cache or compiled (and
    /// cached) on a blocking thread; not pre-linked, so the caller links it
    /// with the imports it offers. Refuses a core module.
    pub(crate) async fn component(&self, module: &WasmModule) -> Result<Component, SandboxError> {
        let len = module.bytes().len() as u64;
        if len > self.shared.max_module_bytes {
            return Err(crate::module_too_large(len, self.shared.max_module_bytes));
        }
        if binary_kind(module.bytes())? != BinaryKind::Component {
            return Err(SandboxError::InvalidTask(
                "the module is a core WebAssembly module, not a component; \
                 build the function for wasm32-wasip2 so that it exports wasi:http/incoming-handler"
                    .to_string(),
            ));
        }
        let shared = self.shared.clone();
        let module = module.clone();
        tokio::task::spawn_blocking(move || {
            let file = shared
                .cache
                .file(module.hash().as_bytes(), BinaryKind::Component);
            shared.load_or_compile(
                &file,
                // SAFETY: as in `compile_now`: the cache folder holds only
                // whole files this code wrote, named by the engine's
                // compatibility hash, read into memory.
                |bytes| unsafe { Component::deserialize(&shared.engine, bytes) },
                || Component::from_binary(&shared.engine, module.bytes()),
                Component::serialize,
            )
        })
        .await
        .map_err(|e| {
            SandboxError::io("the wasm compiler thread failed", std::io::Error::other(e))
        })?
    }

    pub(crate) async fn run(&self, task: Task, cancel: CancellationToken) -> Report {
        let mut notes = Vec::new();
        let limits = &task.limits;
        if limits.cpu_millis.is_some_and(|m| m < 1000) {
            notes.push(
                "cpu limit below one core not applied: a wasm task runs on one thread".to_string(),
            );
        }
        let fuel = match limits.fuel {
            Some(f) if self.shared.fuel_enabled => Some(f),
            Some(_) => {
                notes.push(
                    "fuel limit not applied: this sandbox runs without fuel metering".to_string(),
                );
                None
            }
            None => None,
        };
        let mut memory = limits.memory.unwrap_or(self.shared.max_memory);
        if memory > self.shared.max_memory {
            notes.push(format!(
                "memory limit lowered from {memory} to this node's wasm maximum, {} bytes",
                self.shared.max_memory
            ));
            memory = self.shared.max_memory;
        }

        let permit = tokio::select! {
            p = self.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Report::failed(
                    SandboxError::Engine("the instance pool is closed".to_string()), notes),
            },
            () = cancel.cancelled() => return Report::failed(SandboxError::Cancelled, notes),
        };
        let shared = self.shared.clone();
        let handle = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            handle.block_on(execute(&shared, task, cancel, memory, fuel, notes))
        });
        match job.await {
            Ok(report) => report,
            Err(e) => Report::failed(
                SandboxError::io("the wasm worker thread failed", std::io::Error::other(e)),
                Vec::new(),
            ),
        }
    }
}

/// Store state for a preview 1 module.
struct P1State {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

/// Store state for a preview 2 component.
struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Pre-linked code, ready to instantiate.
#[derive(Clone)]
enum Compiled {
    Module(InstancePre<P1State>),
    Component(CommandPre<P2State>),
}

/// What the limiter saw, readable after the store is gone.
#[derive(Default)]
pub(crate) struct MemoryStats {
    peak: AtomicU64,
    hit: AtomicBool,
}

/// Caps the total linear memory of one task and records its peak.
pub(crate) struct Limiter {
    limit: u64,
    used: u64,
    pending: u64,
    stats: Arc<MemoryStats>,
}

/// The error a refused memory growth traps with.
#[derive(Debug)]
struct MemoryLimitHit;

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memory limit reached")
    }
}

impl std::error::Error for MemoryLimitHit {}

impl Limiter {
    pub(crate) fn new(limit: u64, stats: Arc<MemoryStats>) -> Limiter {
        Limiter {
            limit,
            used: 0,
            pending: 0,
            stats,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(grow) > self.limit {
            self.stats.hit.store(true, Ordering::Relaxed);
            return Err(MemoryLimitHit.into());
        }
        self.used += grow;
        self.pending = grow;
        self.stats.peak.fetch_max(self.used, Ordering::Relaxed);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used = self.used.saturating_sub(self.pending);
        self.pending = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Runs one task on the current (blocking-pool) thread.
async fn execute(
    shared: &Arc<Shared>,
    task: Task,
    cancel: CancellationToken,
    memory: u64,
    fuel: Option<u64>,
    notes: Vec<String>,
) -> Report {
    let TaskKind::Wasm(wasm) = &task.kind else {
        return Report::failed(
            SandboxError::InvalidTask("not a wasm task".to_string()),
            notes,
        );
    };
    let stdout = CaptureSink::new(task.limits.stdout_cap);
    let stderr = CaptureSink::new(task.limits.stderr_cap);
    let stats = Arc::new(MemoryStats::default());
    let finish = |exit_code, error, notes| Report {
        exit_code,
        error,
        stdout: stdout.snapshot(),
        stderr: stderr.snapshot(),
        peak_memory: Some(stats.peak.load(Ordering::Relaxed)),
        notes,
    };

    // the deadline covers compiling too
    let timeout = task.limits.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let compiled = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(SandboxError::Cancelled),
        () = tokio::time::sleep_until(deadline) => Err(SandboxError::Timeout(timeout)),
        c = shared.compiled(&wasm.module) => c,
    };
    let compiled = match compiled {
        Ok(c) => c,
        Err(e) => return finish(None, Some(e), notes),
    };
    let mut builder = WasiCtxBuilder::new();
    let mut argv = Vec::with_capacity(wasm.args.len() + 1);
    argv.push(task.name.as_str());
    argv.extend(wasm.args.iter().map(String::as_str));
    builder
        .args(&argv)
        .envs(&wasm.env)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        // Left off: with it, WASI sleeps block the thread and no deadline
        // or cancellation could end them.
        .allow_blocking_current_thread(false)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let mut preopens = vec![
        (&task.inputs, "/inputs", DirPerms::READ, FilePerms::READ),
        (&task.outputs, "/outputs", DirPerms::all(), FilePerms::all()),
    ];
    if let Some(scratch) = &task.scratch {
        preopens.push((scratch, "/tmp", DirPerms::all(), FilePerms::all()));
    }
    for (host, guest, dirs, files) in preopens {
        if let Err(e) = builder.preopened_dir(host, guest, dirs, files) {
            let err = SandboxError::io(
                format!("cannot open {} for {guest}", host.display()),
                std::io::Error::other(format!("{e:#}")),
            );
            return finish(None, Some(err), notes);
        }
    }
    let limiter = Limiter {
        limit: memory,
        used: 0,
        pending: 0,
        stats: stats.clone(),
    };

    let engine = &shared.engine;
    let fuel_enabled = shared.fuel_enabled;
    let work = async move {
        match compiled {
            Compiled::Module(pre) => {
                let state = P1State {
                    wasi: builder.build_p1(),
                    limiter,
                };
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                prepare_store(&mut store, fuel_enabled, fuel)?;
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await?;
                Ok(0)
            }
            Compiled::Component(pre) => {
                let state = P2State {
                    ctx: builder.build(),
                    table: ResourceTable::new(),
                    limiter,
                };
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                prepare_store(&mut store, fuel_enabled, fuel)?;
                let command = pre.instantiate_async(&mut store).await?;
                let result = command.wasi_cli_run().call_run(&mut store).await?;
                Ok(if result.is_ok() { 0 } else { 1 })
            }
        }
    };
    let result: Result<wasmtime::Result<i32>, SandboxError> = tokio::select! {
        biased;
        r = work => Ok(r),
        () = cancel.cancelled() => Err(SandboxError::Cancelled),
        () = tokio::time::sleep_until(deadline) => Err(SandboxError::Timeout(timeout)),
    };
    let (exit_code, error) = match result {
        Err(e) => (None, Some(e)),
        Ok(Ok(code)) => (Some(code), None),
        Ok(Err(e)) => classify(e, &stats, memory, fuel),
    };
    finish(exit_code, error, notes)
}

fn prepare_store<T>(
    store: &mut Store<T>,
    fuel_enabled: bool,
    fuel: Option<u64>,
) -> wasmtime::Result<()> {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    if fuel_enabled {
        store.set_fuel(fuel.unwrap_or(u64::MAX))?;
    }
    Ok(())
}

/// Turns what wasmtime returned into an exit code or a failure.
pub(crate) fn classify(
    e: wasmtime::Error,
    stats: &MemoryStats,
    memory: u64,
    fuel: Option<u64>,
) -> (Option<i32>, Option<SandboxError>) {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return (Some(exit.0), None);
    }
    if stats.hit.load(Ordering::Relaxed) || e.downcast_ref::<MemoryLimitHit>().is_some() {
        return (None, Some(SandboxError::MemoryLimit { limit: memory }));
    }
    if let Some(Trap::OutOfFuel) = e.downcast_ref::<Trap>() {
        return (None, Some(SandboxError::OutOfFuel(fuel.unwrap_or(0))));
    }
    // `{:?}` carries the wasm backtrace; keep it short.
    let text = format!("{e:?}");
    let short: Vec<&str> = text.lines().take(24).collect();
    (None, Some(SandboxError::Trap(short.join("\n"))))
}

/// What the first bytes say a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryKind {
    Module,
    Component,
}

fn binary_kind(bytes: &[u8]) -> Result<BinaryKind, SandboxError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(SandboxError::InvalidTask(
            "the module is not a WebAssembly binary (no \\0asm header); give a .wasm file"
                .to_string(),
        ));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok(BinaryKind::Module),
        [0x0d, 0, 1, 0] => Ok(BinaryKind::Component),
        _ => Err(SandboxError::InvalidTask(format!(
            "unsupported WebAssembly binary version {:02x?}; give a core module or a component",
            &bytes[4..8]
        ))),
    }
}

/// A compile in progress: `None` until it ends.
type CompileResult = Option<Result<Compiled, String>>;

impl Shared {
    /// The pre-linked code for `module`: from memory at once, else from
    /// disk or compiled on a thread of its own, joined by every task that
    /// wants the same module. Dropping the returned future leaves the
    /// compile running to fill the cache.
    async fn compiled(self: &Arc<Self>, module: &WasmModule) -> Result<Compiled, SandboxError> {
        let key = *module.hash().as_bytes();
        if let Some(c) = self.cache.get(&key) {
            debug!(module = %module.hash().to_hex(), "compiled code found in memory");
            self.cache.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c);
        }
        let len = module.bytes().len() as u64;
        if len > self.max_module_bytes {
            return Err(crate::module_too_large(len, self.max_module_bytes));
        }
        let kind = binary_kind(module.bytes())?;
        let mut rx = {
            let mut inflight = self
                .cache
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // checked again under the lock: a compile may have just ended
            if let Some(c) = self.cache.get(&key) {
                self.cache.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(c);
            }
            match inflight.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel::<CompileResult>(None);
                    inflight.insert(key, rx.clone());
                    let shared = self.clone();
                    let module = module.clone();
                    let spawned = std::thread::Builder::new()
                        .name("weft-compile".to_string())
                        .spawn(move || {
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    shared.compile_now(&module, kind)
                                }))
                                .unwrap_or_else(|_| {
                                    Err(SandboxError::Engine("the compiler panicked".to_string()))
                                })
                                .map_err(|e| match e {
                                    SandboxError::InvalidTask(m) => m,
                                    other => other.to_string(),
                                });
                            let mut inflight = shared
                                .cache
                                .inflight
                                .lock()
                                .unwrap_or_else(|p| p.into_inner());
                            if let Ok(c) = &result {
                                shared.cache.insert(key, c.clone());
                            }
                            inflight.remove(&key);
                            let _ = tx.send(Some(result));
                        });
                    if let Err(e) = spawned {
                        inflight.remove(&key);
                        return Err(SandboxError::io("cannot start a compiler thread", e));
                    }
                    rx
                }
            }
        };
        let done = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| {
                SandboxError::Engine("the compiler thread ended without a result".to_string())
            })?
            .clone();
        match done {
            Some(Ok(c)) => Ok(c),
            Some(Err(m)) => Err(SandboxError::InvalidTask(m)),
            None => Err(SandboxError::Engine(
                "the compiler thread ended without a result".to_string(),
            )),
        }
    }

    /// Loads or compiles `module` on this thread, and pre-links it.
    fn compile_now(&self, module: &WasmModule, kind: BinaryKind) -> Result<Compiled, SandboxError> {
        let key = *module.hash().as_bytes();
        let file = self.cache.file(&key, kind);
        let compiled = match kind {
            BinaryKind::Module => {
                let m = self.load_or_compile(
                    &file,
                    // SAFETY: the cache folder belongs to this node and holds
                    // only files this code wrote whole (temp file, then
                    // rename); the name carries the engine's compatibility
                    // hash, and wasmtime checks the header again. Whoever can
                    // write there can already replace the node's binary. The
                    // bytes are read into memory rather than mapped, so a
                    // file changed later cannot affect loaded code.
                    |bytes| unsafe { Module::deserialize(&self.engine, bytes) },
                    || Module::from_binary(&self.engine, module.bytes()),
                    Module::serialize,
                )?;
                if m.get_export("_start").is_none() {
                    return Err(SandboxError::InvalidTask(
                        "the module exports no _start function; weft runs WASI commands \
                         (build a binary, not a library)"
                            .to_string(),
                    ));
                }
                let pre = self.p1_linker.instantiate_pre(&m).map_err(|e| {
                    SandboxError::InvalidTask(format!(
                        "the module needs imports weft does not offer (only WASI preview 1): {e:#}"
                    ))
                })?;
                Compiled::Module(pre)
            }
            BinaryKind::Component => {
                let c = self.load_or_compile(
                    &file,
                    // SAFETY: as for modules above.
                    |bytes| unsafe { Component::deserialize(&self.engine, bytes) },
                    || Component::from_binary(&self.engine, module.bytes()),
                    Component::serialize,
                )?;
                let pre = self
                    .p2_linker
                    .instantiate_pre(&c)
                    .and_then(CommandPre::new)
                    .map_err(|e| {
                        SandboxError::InvalidTask(format!(
                            "the component is not a WASI command weft can run \
                             (it must export wasi:cli/run and import only WASI 0.2): {e:#}"
                        ))
                    })?;
                Compiled::Component(pre)
            }
        };
        Ok(compiled)
    }

    fn load_or_compile<C>(
        &self,
        file: &Path,
        load: impl FnOnce(&[u8]) -> wasmtime::Result<C>,
        compile: impl FnOnce() -> wasmtime::Result<C>,
        serialize: impl FnOnce(&C) -> wasmtime::Result<Vec<u8>>,
    ) -> Result<C, SandboxError> {
        if let Ok(bytes) = std::fs::read(file) {
            match load(&bytes) {
                Ok(c) => {
                    debug!(file = %file.display(), "compiled code loaded from disk");
                    self.cache.stats.disk_loads.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => {
                    warn!(file = %file.display(), error = %format!("{e:#}"),
                        "cached compiled code unusable; compiling again");
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        let started = std::time::Instant::now();
        let code = compile().map_err(|e| {
            SandboxError::InvalidTask(format!("the module does not compile: {e:#}"))
        })?;
        self.cache.stats.compiles.fetch_add(1, Ordering::Relaxed);
        debug!(
            file = %file.display(),
            compile_ms = started.elapsed().as_millis() as u64,
            "compiled"
        );
        match serialize(&code) {
            Ok(bytes) => {
                if let Err(e) = write_atomically(file, &bytes) {
                    warn!(file = %file.display(), error = %e, "cannot cache compiled code");
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "cannot serialize compiled code"),
        }
        Ok(code)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Compiled code by module hash: a bounded map in memory, files on disk.
struct ModuleCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash, part of every file name.
    compat: String,
    capacity: usize,
    entries: Mutex<CacheMap>,
    /// Compiles in progress, by module hash.
    inflight: Mutex<HashMap<[u8; 32], watch::Receiver<CompileResult>>>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_loads: AtomicU64,
    compiles: AtomicU64,
}

#[derive(Default)]
struct CacheMap {
    clock: u64,
    map: HashMap<[u8; 32], (Compiled, u64)>,
}

impl ModuleCache {
    fn new(engine: &Engine, dir: &Path, capacity: usize) -> Result<ModuleCache, SandboxError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            SandboxError::io(format!("cannot create the wasm cache {}", dir.display()), e)
        })?;
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let compat = hasher.0.finalize().to_hex()[..16].to_string();
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            compat,
            capacity: capacity.max(1),
            entries: Mutex::new(CacheMap::default()),
            inflight: Mutex::new(HashMap::new()),
            stats: Counters::default(),
        })
    }

    fn file(&self, key: &[u8; 32], kind: BinaryKind) -> PathBuf {
        let kind = match kind {
            BinaryKind::Module => "module",
            BinaryKind::Component => "component",
        };
        self.dir
            .join(format!("{}-{}.{kind}.cwasm", hex::encode(key), self.compat))
    }

    fn get(&self, key: &[u8; 32]) -> Option<Compiled> {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let m = &mut *guard;
        m.clock += 1;
        let now = m.clock;
        m.map.get_mut(key).map(|(c, used)| {
            *used = now;
            c.clone()
        })
    }

    fn insert(&self, key: [u8; 32], compiled: Compiled) {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let m = &mut *guard;
        m.clock += 1;
        if m.map.len() >= self.capacity && !m.map.contains_key(&key) {
            let oldest = m
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                m.map.remove(&k);
            }
        }
        m.map.insert(key, (compiled, m.clock));
    }
}

/// Feeds `std::hash::Hash` values into BLAKE3, for a hash stable across builds.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let h = self.0.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The thread that advances the engine's epoch; stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Result<EpochTicker, SandboxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tick = tick.max(Duration::from_millis(1));
        let thread = std::thread::Builder::new()
            .name("weft-epoch".to_string())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::io("cannot start the epoch ticker thread", e))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_kinds_are_told_apart() {
        assert_eq!(
            binary_kind(b"\0asm\x01\0\0\0rest").ok(),
            Some(BinaryKind::Module)
        );
        assert_eq!(
            binary_kind(b"\0asm\x0d\0\x01\0rest").ok(),
            Some(BinaryKind::Component)
        );
        assert!(binary_kind(b"\0asm\x02\0\0\0").is_err());
        assert!(binary_kind(b"(module)").is_err());
        assert!(binary_kind(b"").is_err());
    }

    #[test]
    fn limiter_caps_the_total_and_tracks_the_peak() {
        let stats = Arc::new(MemoryStats::default());
        let mut l = Limiter {
            limit: 100,
            used: 0,
            pending: 0,
            stats: stats.clone(),
        };
        assert!(l.memory_growing(0, 60, None).expect("fits"));
        assert!(l.memory_growing(0, 40, None).expect("fits, second memory"));
        assert!(l.memory_growing(60, 61, None).is_err());
        assert!(stats.hit.load(Ordering::Relaxed));
        assert_eq!(stats.peak.load(Ordering::Relaxed), 100);
        // A growth the engine then fails to make is not counted.
        let mut l = Limiter {
            limit: 100,
            used: 0,
            pending: 0,
            stats: Arc::new(MemoryStats::default()),
        };
        assert!(l.memory_growing(0, 50, None).expect("fits"));
        assert!(l.memory_growing(50, 90, None).expect("fits"));
        l.memory_grow_failed(wasmtime::Error::msg("os refused"))
            .expect("ignored");
        assert_eq!(l.used, 50);
    }
}
