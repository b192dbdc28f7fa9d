//! WASI HTTP functions: a component that exports
//! `wasi:http/incoming-handler`, compiled once and instantiated per request.
//!
//! [`HttpFunction::load`] takes the component's compiled code from the
//! sandbox's cache (or compiles and caches it), links it with WASI 0.2 and
//! `wasi:http`, and keeps the pre-linked [`ProxyPre`]. [`HttpFunction::handle`]
//! then serves one request in a fresh store: its own WASI context (the
//! function's environment, `/inputs` read-only when configured, stdout and
//! stderr into the function's log ring), its own memory limit, and the
//! configured deadline, enforced by the engine's epoch ticker as for tasks.
//! Instances come from the same pool and the same slots as tasks, so a
//! burst of requests waits for a slot rather than failing.
//!
//! Isolation: a function reaches nothing but its inputs. Outgoing HTTP
//! requests are refused (`HttpRequestDenied`), as are TCP, UDP and name
//! lookups. A trap, a timeout, or a handler that never answers ends that
//! request with a [`SandboxError`]; the next request gets a fresh instance.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{DirPerms, FilePerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::bindings::ProxyPre;
use wasmtime_wasi_http::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::body::HyperOutgoingBody;
use wasmtime_wasi_http::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::{HttpResult, WasiHttpCtx, WasiHttpView};

use crate::wasm::{Limiter, MemoryStats, classify};
use crate::{Sandbox, SandboxError, WasmModule};

/// Bytes of stdout and stderr a function keeps (the latest).
pub const LOG_RING_BYTES: usize = 64 << 10;

/// How one function runs.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// Host folder preopened read-only at `/inputs`; must exist.
    pub inputs: Option<PathBuf>,
    /// The whole environment every instance sees.
    pub env: Vec<(String, String)>,
    /// Deadline of one request, from the call of [`HttpFunction::handle`]
    /// (waiting for an instance slot included) to the end of the response
    /// body.
    pub timeout: Duration,
    /// Linear memory of one instance in bytes; `None` (or more than the
    /// sandbox allows) gives the sandbox's maximum.
    pub memory: Option<u64>,
    /// Largest request body and largest response body, in bytes.
    pub max_body: usize,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            inputs: None,
            env: Vec::new(),
            timeout: Duration::from_secs(30),
            memory: None,
            max_body: 16 << 20,
        }
    }
}

/// A loaded HTTP function. Cheap to clone; clones share the compiled code
/// and the log ring.
#[derive(Clone)]
pub struct HttpFunction {
    inner: Arc<FnInner>,
}

struct FnInner {
    /// Keeps the engine and its epoch ticker alive: without ticks no
    /// deadline could end a running instance.
    sandbox: Sandbox,
    pre: ProxyPre<FnState>,
    cfg: FunctionConfig,
    memory: u64,
    logs: RingLog,
    module: blake3::Hash,
}

impl std::fmt::Debug for HttpFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFunction")
            .field("module", &self.inner.module.to_hex().as_str())
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl HttpFunction {
    /// Compiles (or loads from the sandbox's compiled-code cache) a
    /// `wasi:http` proxy component and pre-links it. Refuses a core module,
    /// a component that does not export `wasi:http/incoming-handler`, one
    /// that imports more than WASI 0.2 and `wasi:http`, a missing inputs
    /// folder and a malformed environment.
    pub async fn load(
        sandbox: &Sandbox,
        module: WasmModule,
        cfg: FunctionConfig,
    ) -> Result<HttpFunction, SandboxError> {
        check_config(&cfg)?;
        let wasm = &sandbox.inner.wasm;
        let component = wasm.component(&module).await?;
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let mut linker: Linker<FnState> = Linker::new(wasm.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            SandboxError::InvalidTask(format!(
                "the component needs imports weft does not offer \
                 (only WASI 0.2 and wasi:http): {e:#}"
            ))
        })?;
        let pre = ProxyPre::new(pre).map_err(|e| {
            SandboxError::InvalidTask(format!(
                "the component is not an HTTP function: it must export \
                 wasi:http/incoming-handler (build it with the wasi:http proxy world): {e:#}"
            ))
        })?;
        let memory = cfg.memory.unwrap_or(u64::MAX).min(wasm.max_memory());
        debug!(module = %module.hash().to_hex(), "http function loaded");
        Ok(HttpFunction {
            inner: Arc::new(FnInner {
                sandbox: sandbox.clone(),
                pre,
                cfg,
                memory,
                logs: RingLog::new(LOG_RING_BYTES),
                module: module.hash(),
            }),
        })
    }

    /// Serves one request in a fresh instance. A request body over
    /// `max_body` is refused before any instance starts; a response body over
    /// it ends the request. The instance runs on the blocking pool (guest
    /// code never holds a runtime worker); dropping the returned future stops
    /// it at its next epoch tick.
    pub async fn handle(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, SandboxError> {
        let inner = self.inner.clone();
        let timeout = inner.cfg.timeout;
        let now = tokio::time::Instant::now();
        // A deadline past what the clock can hold means none: a year.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let len = req.body().len();
        if len > inner.cfg.max_body {
            return Err(SandboxError::InvalidTask(format!(
                "the request body of {len} bytes is over the function's limit of {} bytes; \
                 send a smaller body",
                inner.cfg.max_body
            )));
        }
        let slots = inner.sandbox.inner.wasm.slots().clone();
        let permit = tokio::select! {
            p = slots.acquire_owned() => p.map_err(|_| {
                SandboxError::Engine("the instance pool is closed".to_string())
            })?,
            () = tokio::time::sleep_until(deadline) => return Err(SandboxError::Timeout(timeout)),
        };
        let cancel = CancellationToken::new();
        let stop_on_drop = cancel.clone().drop_guard();
        let handle = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            handle.block_on(inner.serve(req, deadline, cancel))
        });
        let result = job.await.map_err(|e| {
            SandboxError::io("the wasm worker thread failed", std::io::Error::other(e))
        })?;
        stop_on_drop.disarm();
        result
    }

    /// What the instances wrote to stdout and stderr: the latest
    /// [`LOG_RING_BYTES`] bytes, from the start of a line where cut.
    pub fn logs(&self) -> String {
        self.inner.logs.text()
    }

    /// The configuration the function was loaded with.
    pub fn config(&self) -> &FunctionConfig {
        &self.inner.cfg
    }

    /// The BLAKE3 hash of the component's bytes.
    pub fn module_hash(&self) -> blake3::Hash {
        self.inner.module
    }
}

fn check_config(cfg: &FunctionConfig) -> Result<(), SandboxError> {
    if let Some(dir) = &cfg.inputs
        && !dir.is_dir()
    {
        return Err(SandboxError::InvalidTask(format!(
            "the inputs folder {} does not exist or is not a folder; create it before loading the function",
            dir.display()
        )));
    }
    for (k, v) in &cfg.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SandboxError::InvalidTask(format!(
                "environment variable {k:?}: names must be non-empty without '=' or NUL, values without NUL"
            )));
        }
    }
    if cfg.timeout.is_zero() {
        return Err(SandboxError::InvalidTask(
            "the function's timeout is zero; give it a deadline above zero".to_string(),
        ));
    }
    Ok(())
}

impl FnInner {
    /// One request on the current (blocking-pool) thread.
    async fn serve(
        &self,
        req: http::Request<Bytes>,
        deadline: tokio::time::Instant,
        cancel: CancellationToken,
    ) -> Result<http::Response<Bytes>, SandboxError> {
        let timeout = self.cfg.timeout;
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let stats = Arc::new(MemoryStats::default());
        let mut store = self.store(stats.clone())?;

        let (mut parts, body) = req.into_parts();
        if parts.uri.authority().is_none() && !parts.headers.contains_key(http::header::HOST) {
            parts.headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let body = Full::new(body).map_err(|never: Infallible| -> hyper::Error { match never {} });
        let req = hyper::Request::from_parts(parts, body);
        let (tx, rx) = oneshot::channel();
        let req = store
            .data_mut()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| {
                SandboxError::InvalidTask(format!("the request cannot be passed on: {e:#}"))
            })?;
        let out = store
            .data_mut()
            .new_response_outparam(tx)
            .map_err(engine_err)?;

        let pre = self.pre.clone();
        // Owns the store: when the handler returns or traps, the store and
        // everything the guest held (the response sender, the body stream)
        // go with it, so `answer` always ends.
        let guest = async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        let max = self.cfg.max_body;
        let answer = async move {
            match rx.await {
                Ok(Ok(resp)) => collect(resp, max).await.map(Some),
                Ok(Err(code)) => Err(SandboxError::Trap(format!(
                    "the function answered with the error {code:?} instead of a response"
                ))),
                Err(_) => Ok(None),
            }
        };
        tokio::pin!(guest, answer);
        let mut returned = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(SandboxError::Cancelled),
                () = tokio::time::sleep_until(deadline) => return Err(SandboxError::Timeout(timeout)),
                r = &mut guest, if !returned => {
                    if let Err(e) = r {
                        return Err(self.failure(e, &stats));
                    }
                    returned = true;
                }
                a = &mut answer => match a? {
                    Some(resp) => return Ok(resp),
                    None if returned => {
                        return Err(SandboxError::Trap(
                            "the function returned without setting a response \
                             (call response-outparam.set once per request)"
                                .to_string(),
                        ));
                    }
                    None => {
                        // The guest dropped its response unset and goes on:
                        // wait for its end to say how it ended.
                        let r = tokio::select! {
                            biased;
                            () = cancel.cancelled() => return Err(SandboxError::Cancelled),
                            () = tokio::time::sleep_until(deadline) => {
                                return Err(SandboxError::Timeout(timeout));
                            }
                            r = &mut guest => r,
                        };
                        return Err(match r {
                            Err(e) => self.failure(e, &stats),
                            Ok(()) => SandboxError::Trap(
                                "the function returned without setting a response \
                                 (call response-outparam.set once per request)"
                                    .to_string(),
                            ),
                        });
                    }
                },
            }
        }
    }

    /// A fresh store for one request.
    fn store(&self, stats: Arc<MemoryStats>) -> Result<Store<FnState>, SandboxError> {
        let wasm = &self.sandbox.inner.wasm;
        let mut builder = WasiCtxBuilder::new();
        builder
            .envs(&self.cfg.env)
            .stdout(self.logs.clone())
            .stderr(self.logs.clone())
            // Left off: with it, WASI sleeps block the thread and no deadline
            // could end them.
            .allow_blocking_current_thread(false)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = &self.cfg.inputs {
            builder
                .preopened_dir(dir, "/inputs", DirPerms::READ, FilePerms::READ)
                .map_err(|e| {
                    SandboxError::io(
                        format!("cannot open {} for /inputs", dir.display()),
                        std::io::Error::other(format!("{e:#}")),
                    )
                })?;
        }
        let state = FnState {
            ctx: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: Limiter::new(self.memory, stats),
            logs: self.logs.clone(),
        };
        let mut store = Store::new(wasm.engine(), state);
        store.limiter(|s| &mut s.limiter);
        wasm.prepare(&mut store)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        Ok(store)
    }

    fn failure(&self, e: wasmtime::Error, stats: &MemoryStats) -> SandboxError {
        match classify(e, stats, self.memory, None) {
            (_, Some(err)) => err,
            (code, None) => SandboxError::Trap(format!(
                "the function exited (code {}) while handling the request; \
                 a function must return from its handler, not exit",
                code.unwrap_or(0)
            )),
        }
    }
}

/// Reads a response body of at most `max` bytes.
async fn collect(
    resp: hyper::Response<HyperOutgoingBody>,
    max: usize,
) -> Result<http::Response<Bytes>, SandboxError> {
    let (parts, mut body) = resp.into_parts();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|code| {
            SandboxError::Trap(format!("the function's response body failed: {code:?}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > max {
                return Err(SandboxError::InvalidTask(format!(
                    "the function's response body is over its limit of {max} bytes; \
                     answer with less or raise the function's max_body"
                )));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(http::Response::from_parts(parts, buf.freeze()))
}

/// Store state for one request.
struct FnState {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: Limiter,
    logs: RingLog,
}

impl WasiView for FnState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for FnState {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// A function must not reach the network: every outgoing request is
    /// refused, and the refusal is noted in the function's log.
    fn send_request(
        &mut self,
        request: hyper::Request<HyperOutgoingBody>,
        _config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        warn!(uri = %request.uri(), "outgoing http request from a function refused");
        self.logs.push(
            format!(
                "weft: outgoing HTTP request to {} refused: functions have no network access\n",
                request.uri()
            )
            .as_bytes(),
        );
        Err(ErrorCode::HttpRequestDenied.into())
    }
}

/// The latest bytes written to a function's stdout and stderr, shared by
/// all its instances.
#[derive(Clone)]
struct RingLog {
    state: Arc<Mutex<Ring>>,
}

struct Ring {
    cap: usize,
    bytes: VecDeque<u8>,
    cut: bool,
}

impl RingLog {
    fn new(cap: usize) -> RingLog {
        RingLog {
            state: Arc::new(Mutex::new(Ring {
                cap,
                bytes: VecDeque::with_capacity(cap.min(4096)),
                cut: false,
            })),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut r = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let data = if data.len() > r.cap {
            r.cut = true;
            &data[data.len() - r.cap..]
        } else {
            data
        };
        let over = (r.bytes.len() + data.len()).saturating_sub(r.cap);
        if over > 0 {
            r.cut = true;
            r.bytes.drain(..over);
        }
        r.bytes.extend(data);
    }

    fn text(&self) -> String {
        let r = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = r.bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        let start = if r.cut {
            all.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1)
        } else {
            0
        };
        String::from_utf8_lossy(&all[start..]).into_owned()
    }
}

crate::capture::wasi_output_sink!(RingLog);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_ring_keeps_the_latest_lines() {
        let ring = RingLog::new(16);
        ring.push(b"first\n");
        assert_eq!(ring.text(), "first\n");
        ring.push(b"second\nthird\n");
        // 19 bytes written, 16 kept: the rest of the cut line is dropped
        assert_eq!(ring.text(), "second\nthird\n");
        ring.push(&[b'x'; 40]);
        assert_eq!(ring.state.lock().expect("lock").bytes.len(), 16);
        let huge = format!("{}\nlast\n", "y".repeat(100));
        ring.push(huge.as_bytes());
        assert_eq!(ring.text(), "last\n");
    }

    #[test]
    fn configs_are_checked() {
        let ok = FunctionConfig::default();
        assert!(check_config(&ok).is_ok());
        let bad_env = FunctionConfig {
            env: vec![("A=B".into(), "x".into())],
            ..FunctionConfig::default()
        };
        assert!(check_config(&bad_env).is_err());
        let missing = FunctionConfig {
            inputs: Some(PathBuf::from("/nonexistent/weft-inputs")),
            ..FunctionConfig::default()
        };
        let e = check_config(&missing).expect_err("missing inputs");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let zero = FunctionConfig {
            timeout: Duration::ZERO,
            ..FunctionConfig::default()
        };
        assert!(check_config(&zero).is_err());
    }
}
