//! Making a replica's backend: fetch what the spec names, lay out its
//! inputs, and start a `wasi:http` function or a container.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http;
use bytes::Bytes;
use futures::future::BoxFuture;
use weft_protocol::service::{ReplicaId, ServiceSpec, ServiceTask};
use weft_protocol::{ArtifactRef, Hash};
use weft_sandbox::Sandbox;

use super::replicas::{Backend, replica_dir};
use crate::sched::Fetcher;
use crate::store::{Store, StoreError};

/// Largest request or response body a replica takes or gives.
pub const MAX_BODY: usize = 16 << 20;

/// What starting a backend needs of the node.
#[derive(Clone)]
pub struct BackendCtx {
    pub store: Store,
    pub fetcher: Arc<dyn Fetcher>,
    pub sandbox: Sandbox,
    /// The node's `work/` folder.
    pub work_dir: PathBuf,
}

/// Fetches, lays out and starts replica `id` of `spec`.
pub async fn start(
    ctx: &BackendCtx,
    spec: &ServiceSpec,
    id: ReplicaId,
) -> Result<Arc<dyn Backend>, String> {
    let program = match &spec.task {
        ServiceTask::Wasm { module, .. } => module,
        ServiceTask::Container { image, .. } => image,
    };
    let program = resolve(ctx, program).await?;
    let mut inputs = Vec::new();
    for input in &spec.inputs {
        inputs.push((resolve(ctx, &input.from).await?, input.path.clone()));
    }
    for id in inputs
        .iter()
        .map(|(h, _)| *h)
        .chain(std::iter::once(program))
    {
        ctx.fetcher
            .fetch(id)
            .await
            .map_err(|e| format!("fetching {id}: {e}"))?;
    }
    let dir = replica_dir(&ctx.work_dir, id);
    let inputs_dir = dir.join("inputs");
    {
        let store = ctx.store.clone();
        let dir = dir.clone();
        let inputs_dir = inputs_dir.clone();
        tokio::task::spawn_blocking(move || lay_out(&store, &dir, &inputs_dir, &inputs))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("laying out the inputs: {e}"))?;
    }
    match &spec.task {
        ServiceTask::Wasm { env, .. } => {
            let sandbox = ctx.sandbox.clone();
            let path = ctx.store.blob_path(&program);
            let module = tokio::task::spawn_blocking(move || sandbox.read_module(&path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let config = weft_sandbox::http::FunctionConfig {
                inputs: (!spec.inputs.is_empty()).then_some(inputs_dir),
                env: env
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                    .collect(),
                timeout: spec.timeout.duration(),
                memory: spec.resources.memory.map(|m| m.bytes()),
                max_body: MAX_BODY,
            };
            let f = weft_sandbox::http::HttpFunction::load(&ctx.sandbox, module, config)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(Function { f, dir }))
        }
        ServiceTask::Container {
            command,
            args,
            env,
            workdir,
            port,
            ..
        } => {
            let store = ctx.store.clone();
            let work_dir = ctx.work_dir.clone();
            let (rootfs, config) = tokio::task::spawn_blocking(move || {
                crate::image::rootfs(&store, &work_dir, &program)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the image: {e}"))?;
            let strings = |v: &[weft_protocol::job::Arg]| -> Vec<String> {
                v.iter().map(|a| a.as_str().to_string()).collect()
            };
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                .collect();
            let mut c = weft_sandbox::service::ServiceContainer::new(
                spec.name.as_str(),
                rootfs,
                config.command_line(&strings(command), &strings(args)),
            );
            c.env = config.environment(&env);
            c.workdir = workdir
                .as_ref()
                .map(|w| w.as_str().to_string())
                .or(config.workdir.clone());
            c.inputs = (!spec.inputs.is_empty()).then_some(inputs_dir);
            c.memory = spec.resources.memory.map(|m| m.bytes());
            c.cpu_millis = spec.resources.cpu.map(|c| c.millis());
            let svc = weft_sandbox::service::ContainerService::start(&ctx.sandbox, c)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(Container {
                svc: tokio::sync::RwLock::new(Some(svc)),
                port: *port,
                dir,
            }))
        }
    }
}

async fn resolve(ctx: &BackendCtx, r: &ArtifactRef) -> Result<Hash, String> {
    let store = ctx.store.clone();
    let r2 = r.clone();
    tokio::task::spawn_blocking(move || store.resolve(&r2))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{r}: {e}"))
}

/// A fresh replica folder with the inputs laid out in it.
fn lay_out(
    store: &Store,
    dir: &std::path::Path,
    inputs: &std::path::Path,
    list: &[(Hash, weft_protocol::job::InputPath)],
) -> Result<(), StoreError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(inputs).map_err(StoreError::io(inputs))?;
    store.export_inputs(inputs, list)
}

/// A `wasi:http` function: an instance per request.
struct Function {
    f: weft_sandbox::http::HttpFunction,
    dir: PathBuf,
}

impl Backend for Function {
    fn handle(
        &self,
        req: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, String>> {
        Box::pin(async move { self.f.handle(req).await.map_err(|e| e.to_string()) })
    }

    fn logs(&self) -> String {
        self.f.logs()
    }

    fn stop(self: Arc<Self>, _grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let dir = self.dir.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        })
    }
}

/// A container listening on `port` inside its own network namespace;
/// each request is one HTTP/1.1 exchange on a connection made inside it.
struct Container {
    svc: tokio::sync::RwLock<Option<weft_sandbox::service::ContainerService>>,
    port: u16,
    dir: PathBuf,
}

impl Container {
    async fn connect(&self) -> Result<tokio::net::TcpStream, String> {
        let svc = self.svc.read().await;
        let Some(svc) = svc.as_ref() else {
            return Err("the container was stopped".into());
        };
        svc.connect(self.port).await.map_err(|e| e.to_string())
    }
}

impl Backend for Container {
    fn handle(
        &self,
        req: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, String>> {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let stream = self.connect().await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP handshake with the container: {e}"))?;
            let driver = tokio::spawn(conn);
            let (parts, body) = req.into_parts();
            let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("the container's answer: {e}"))?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("the container's answer body: {e}"))?
                .to_bytes();
            driver.abort();
            Ok(http::Response::from_parts(parts, body))
        })
    }

    fn logs(&self) -> String {
        match self.svc.try_read() {
            Ok(svc) => svc.as_ref().map(|s| s.logs()).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn alive(&self) -> bool {
        match self.svc.try_read() {
            Ok(svc) => svc.as_ref().is_some_and(|s| s.is_running()),
            Err(_) => true,
        }
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.connect().await.map(|_| ()) })
    }

    fn stop(self: Arc<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let svc = self.svc.write().await.take();
            if let Some(svc) = svc
                && let Err(e) = svc.stop(grace).await
            {
                tracing::warn!(error = %e, "cannot stop a service container cleanly");
            }
            let dir = self.dir.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        })
    }
}
