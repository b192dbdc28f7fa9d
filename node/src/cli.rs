//! The `weft` command line.
//!
//! Each command parses its arguments here and calls the store (or, through
//! the API, a running daemon). Output is a table or plain ids for people and
//! JSON with `--json`; errors go to stderr as one `error:` line and a
//! non-zero exit status.

mod backend;
mod fetch;
mod job_cmds;
mod mesh_cmds;
mod model_cmds;
mod output;
mod pipeline_cmds;
pub mod run_cmds;
mod s3_cmds;
mod service_cmds;
mod store_cmds;

pub(crate) use output::human_bytes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::home::Home;

/// weft: a peer-to-peer compute and artifact mesh.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
pub struct Cli {
    /// Home directory of the node (default: $WEFT_HOME, else ~/.weft).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run this machine's node until SIGINT or SIGTERM.
    Daemon(DaemonArgs),
    /// Create the home: identity and config (with a cluster secret).
    Init {
        /// Join an existing cluster: its secret (64 hex digits). Default: a new one.
        #[arg(long, env = "WEFT_CLUSTER_SECRET", hide_env_values = true)]
        cluster_secret: Option<String>,
        /// A peer of that cluster to dial at start, repeatable
        /// (network.bootstrap), e.g. /ip4/10.0.0.5/udp/4001/quic-v1/p2p/12D3KooW...
        #[arg(long = "bootstrap", value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// Overwrite an existing config file.
        #[arg(long)]
        force: bool,
    },
    /// Submit a job (a YAML job spec); it is placed on a capable peer.
    Run {
        /// The job spec.
        #[arg(short, long = "file")]
        file: PathBuf,
        /// Wait for the job to finish and print its outcome.
        #[arg(long)]
        wait: bool,
        /// Run it on this node only (without a daemon: in this process).
        #[arg(long)]
        local: bool,
    },
    /// Jobs: list, status, logs, cancel (from any node of the mesh).
    #[command(subcommand)]
    Job(JobCmd),
    /// Pipelines (kind: Pipeline): run, list runs, status, cancel.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Services (kind: Service): apply, list, status, scale, roll back, remove
    /// (from any node of the mesh).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Runs (every job is one) with their params and metrics, from any node.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// What made an artifact (upstream, to data added by hand), or with
    /// --down what was made from it.
    Lineage {
        /// An id, unique id prefix, tag, or models/NAME@ALIAS or models/NAME:N.
        reference: String,
        /// Follow at most N jobs from the artifact.
        #[arg(long)]
        depth: Option<u32>,
        /// Walk downstream: everything derived from the artifact.
        #[arg(long)]
        down: bool,
    },
    /// The model registry: versions and aliases (from any node of the mesh).
    #[command(subcommand)]
    Model(ModelCmd),
    /// Peers in the mesh, from their adverts (needs a running daemon).
    Peers,
    /// This node's id, addresses and advert; without a running daemon, its
    /// id and the addresses its config listens on.
    Node,
    /// A local multi-node cluster on loopback, for trying weft out.
    #[command(subcommand)]
    Devnet(DevnetCmd),
    /// The S3 gateway: access keys, datasets exposed as bucket prefixes.
    #[command(subcommand)]
    S3(S3Cmd),
    /// Store a file or directory; prints its id.
    Add {
        path: PathBuf,
        /// Also tag it (NAME:VERSION, e.g. datasets/mnist:v1).
        #[arg(long)]
        tag: Option<String>,
        /// Store what symbolic links point to instead of refusing them.
        #[arg(long)]
        follow_symlinks: bool,
        /// Do not pin it (an unpinned, untagged artifact is removed by `weft gc`).
        #[arg(long)]
        no_pin: bool,
    },
    /// Write a file or tree out of the store.
    Get {
        /// An id, unique id prefix or tag.
        reference: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
        /// Overwrite an existing file or fill a non-empty directory.
        #[arg(long)]
        force: bool,
    },
    /// Write a file's bytes to stdout.
    Cat { reference: String },
    /// List artifacts with their size, kind and tags.
    Ls {
        /// Include every blob, not only artifacts added by name.
        #[arg(long)]
        all: bool,
    },
    /// Named versions of artifacts.
    #[command(subcommand)]
    Tag(TagCmd),
    /// Keep artifacts from garbage collection.
    #[command(subcommand)]
    Pin(PinCmd),
    /// Remove artifacts that no pin or tag keeps.
    Gc,
    /// Container images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Store maintenance.
    #[command(subcommand)]
    Store(StoreCmd),
}

/// Flags of `weft daemon`; each overrides config.toml.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonArgs {
    /// REST API address (api.listen).
    #[arg(long, env = "WEFT_API_LISTEN")]
    pub api_listen: Option<String>,
    /// libp2p listen multiaddr, repeatable (network.listen).
    #[arg(long = "listen", env = "WEFT_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Peer to dial at start, repeatable (network.bootstrap).
    #[arg(long = "bootstrap", env = "WEFT_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Turn off mDNS discovery (network.mdns = false).
    #[arg(long, env = "WEFT_NO_MDNS")]
    pub no_mdns: bool,
    /// QUIC data-plane address (data.listen).
    #[arg(long, env = "WEFT_DATA_LISTEN")]
    pub data_listen: Option<String>,
    /// HTTP ingress address for services (ingress.listen).
    #[arg(long, env = "WEFT_INGRESS_LISTEN")]
    pub ingress_listen: Option<String>,
    /// Cluster secret, 64 hex digits (network.cluster_secret).
    #[arg(long, env = "WEFT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Label KEY=VALUE advertised to the mesh, repeatable (node.labels).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

impl DaemonArgs {
    /// Applies the flags on top of the file's settings.
    pub fn apply(&self, config: &mut crate::config::Config) {
        if let Some(a) = &self.api_listen {
            config.api.listen = a.clone();
        }
        if !self.listen.is_empty() {
            config.network.listen = self.listen.clone();
        }
        if !self.bootstrap.is_empty() {
            config.network.bootstrap = self.bootstrap.clone();
        }
        if self.no_mdns {
            config.network.mdns = false;
        }
        if let Some(d) = &self.data_listen {
            config.data.listen = d.clone();
        }
        if let Some(i) = &self.ingress_listen {
            config.ingress.listen = i.clone();
        }
        if let Some(s) = &self.cluster_secret {
            config.network.cluster_secret = Some(s.clone());
        }
        for (k, v) in &self.labels {
            config.node.labels.insert(k.clone(), v.clone());
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// Jobs this node coordinates or has heard of.
    Ls,
    /// A job's state, attempts and result.
    Status { id: String },
    /// A job's stdout and stderr.
    Logs {
        id: String,
        /// Wait for the job to finish, showing its state changes.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a job (stops its running task).
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// Runs, newest first: id, name, experiment, status, node, duration, metrics.
    Ls {
        /// Only the runs of this experiment.
        #[arg(long)]
        experiment: Option<String>,
    },
    /// One run: params, metrics, tags.
    Show { id: String },
    /// Params and metrics of runs side by side, the best value of each
    /// metric marked `*`: the highest, or the lowest for a metric whose
    /// name contains `loss` or `error`.
    Compare {
        /// The runs (two or more).
        #[arg(required = true, num_args = 2.., value_name = "RUN")]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Register the next version of NAME; prints models/NAME:N.
    Register {
        name: String,
        /// An id, a tag, models/OTHER@ALIAS or models/OTHER:N, or a run's
        /// output JOB_ID:/outputs/model.
        reference: String,
    },
    /// Point NAME@ALIAS at a version.
    Alias {
        /// NAME@ALIAS, e.g. iris@champion.
        target: String,
        /// The version number it points at.
        #[arg(value_name = "VERSION")]
        number: String,
    },
    /// Move NAME@ALIAS back to where it pointed before its last move.
    Rollback { target: String },
    /// Models with their version count and aliases.
    Ls,
    /// A model's versions (artifact, run, metrics) and its aliases' history.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PipelineCmd {
    /// Start a run of a pipeline (a YAML pipeline spec); this node coordinates it.
    Run {
        /// The pipeline spec.
        #[arg(short, long = "file")]
        file: PathBuf,
        /// Follow the run to its end; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// Override a param: NAME=VALUE, repeatable.
        #[arg(long = "param", value_parser = pipeline_cmds::parse_param)]
        params: Vec<(String, String)>,
        /// Run every step, reusing no cached result.
        #[arg(long)]
        force: bool,
        /// Run this step without its cached result; repeatable.
        #[arg(long = "force-step", value_name = "STEP")]
        force_steps: Vec<String>,
    },
    /// Pipeline runs this node knows, newest first.
    Ls,
    /// A run's steps in dependency order, with state, duration and job.
    Status { run: String },
    /// Cancel a run: its running steps are cancelled, the rest never start.
    Cancel { run: String },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Apply a service spec (YAML): a new revision unless it equals the current one.
    Apply {
        /// The service spec.
        #[arg(short, long = "file")]
        file: PathBuf,
    },
    /// Services with their revision, kind and ready replicas.
    Ls,
    /// A service: revision, replicas, rollout, endpoints and history.
    Status { name: String },
    /// A service's replicas: node, revision, health, requests in flight.
    Endpoints { name: String },
    /// Every change of a service: applies, scales, rollbacks, removals.
    History { name: String },
    /// Set the desired replicas of the current revision.
    Scale { name: String, replicas: u32 },
    /// Make an earlier revision current (default: the one before the current).
    Rollback {
        name: String,
        #[arg(long = "to-revision", value_name = "N")]
        to_revision: Option<u32>,
    },
    /// The recent output of each replica.
    Logs { name: String },
    /// Remove a service: its replicas stop; its history stays.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum DevnetCmd {
    /// Start N daemons on loopback, each with its own home DIR/nodeI.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where the nodes' homes go (default: $WEFT_DEVNET_DIR, else /tmp/weft-devnet).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Declare a (fake) GPU on node K; repeatable.
        #[arg(long = "gpu-node")]
        gpu_nodes: Vec<usize>,
    },
    /// Stop the devnet's daemons.
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Which devnet nodes run and how many peers each sees.
    Status {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum S3Cmd {
    /// Access keys of this node's S3 gateway ($WEFT_HOME/s3-keys).
    #[command(subcommand)]
    Key(S3KeyCmd),
    /// Make a dataset (a tree added with `weft add`, or one file) objects
    /// under a bucket prefix, mesh-wide; the bytes are not copied.
    Expose {
        /// An id, unique id prefix or tag.
        reference: String,
        #[arg(long)]
        bucket: String,
        /// Key prefix of the objects (e.g. `iris/`); for one file, its key.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum S3KeyCmd {
    /// Create an access key; prints its id and secret (the secret only now).
    Create {
        /// A name to recognise it by.
        #[arg(long)]
        name: Option<String>,
        /// Grant a bucket, as BUCKET:read or BUCKET:write (repeatable);
        /// without any, the key may use every bucket.
        #[arg(long = "bucket", value_name = "BUCKET:PERM")]
        buckets: Vec<String>,
        /// Read only (every grant becomes read).
        #[arg(long)]
        read_only: bool,
        /// Use this access key id instead of a new one.
        #[arg(long)]
        access_key: Option<String>,
        /// Use this secret instead of a new one.
        #[arg(long, env = "WEFT_S3_SECRET_KEY", hide_env_values = true)]
        secret_key: Option<String>,
    },
    /// List access keys (never their secrets).
    Ls,
    /// Remove (revoke) an access key.
    Rm { access_key: String },
}

#[derive(Debug, Subcommand)]
pub enum TagCmd {
    /// Point NAME at an artifact.
    Set { name: String, reference: String },
    /// List tags.
    Ls,
    /// Every version NAME has had.
    History { name: String },
    /// Remove a tag.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PinCmd {
    /// Pin an artifact (and everything in it).
    Add {
        reference: String,
        /// Copies the mesh should keep on distinct peers.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
    /// Remove a pin.
    Rm { reference: String },
    /// List pins.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Store a `docker save` or OCI image-layout archive as an image artifact.
    Import {
        archive: PathBuf,
        /// Tag it (e.g. images/busybox:1.36).
        #[arg(long)]
        tag: Option<String>,
        /// Skip device files in the layers instead of refusing the image.
        #[arg(long)]
        allow_devices: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Re-hash every blob; exits non-zero and lists the ids that fail.
    Verify,
}

/// Sets up logging on stderr: `RUST_LOG` filters (default `warn`).
pub fn init_tracing(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Daemon(_)) {
        init_tracing(cli.log_format, "info");
    } else {
        // A command whose output is piped into `head` should end quietly, as
        // other Unix tools do, rather than fail on a closed pipe. (Not the
        // daemon: a client closing its socket must not kill it.)
        // SAFETY: restoring the default disposition of SIGPIPE before any
        // other thread exists; no handler is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        init_tracing(cli.log_format, "warn");
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(cli.home.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Daemon(args) => {
                let mut config = Config::load(&home)?;
                args.apply(&mut config);
                if config.network.cluster_secret.is_none() {
                    // first start: make this node the first of a new cluster
                    let mut file = Config::load(&home)?;
                    let secret = crate::config::new_secret();
                    file.network.cluster_secret = Some(secret.clone());
                    file.save(&home)?;
                    config.network.cluster_secret = Some(secret);
                    tracing::info!(
                        config = %home.config_path().display(),
                        "generated a new cluster secret; other nodes join with `weft init --cluster-secret <network.cluster_secret from this file>`"
                    );
                }
                crate::daemon::run_until_signal(home, config).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Init {
                cluster_secret,
                bootstrap,
                force,
            } => {
                init(&home, cluster_secret, bootstrap, force)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Run { file, wait, local } => {
                job_cmds::run(&home, &file, wait, local, cli.json).await
            }
            Command::Job(cmd) => match cmd {
                JobCmd::Ls => job_cmds::ls(&home, cli.json).await,
                JobCmd::Status { id } => job_cmds::status(&home, &id, cli.json).await,
                JobCmd::Logs { id, follow } => job_cmds::logs(&home, &id, follow, cli.json).await,
                JobCmd::Cancel { id } => job_cmds::cancel(&home, &id, cli.json).await,
            },
            Command::Runs(cmd) => match cmd {
                RunsCmd::Ls { experiment } => {
                    run_cmds::ls(&home, experiment.as_deref(), cli.json).await
                }
                RunsCmd::Show { id } => run_cmds::show(&home, &id, cli.json).await,
                RunsCmd::Compare { ids } => run_cmds::compare(&home, &ids, cli.json).await,
            },
            Command::Lineage {
                reference,
                depth,
                down,
            } => run_cmds::lineage(&home, &reference, depth, down, cli.json).await,
            Command::Model(cmd) => match cmd {
                ModelCmd::Register { name, reference } => {
                    model_cmds::register(&home, &name, &reference, cli.json).await
                }
                ModelCmd::Alias { target, number } => {
                    model_cmds::alias(&home, &target, &number, cli.json).await
                }
                ModelCmd::Rollback { target } => {
                    model_cmds::rollback(&home, &target, cli.json).await
                }
                ModelCmd::Ls => model_cmds::ls(&home, cli.json).await,
                ModelCmd::Show { name } => model_cmds::show(&home, &name, cli.json).await,
            },
            Command::Pipeline(cmd) => match cmd {
                PipelineCmd::Run {
                    file,
                    wait,
                    params,
                    force,
                    force_steps,
                } => {
                    pipeline_cmds::run(&home, &file, wait, &params, force, &force_steps, cli.json)
                        .await
                }
                PipelineCmd::Ls => pipeline_cmds::ls(&home, cli.json).await,
                PipelineCmd::Status { run } => pipeline_cmds::status(&home, &run, cli.json).await,
                PipelineCmd::Cancel { run } => pipeline_cmds::cancel(&home, &run, cli.json).await,
            },
            Command::Service(cmd) => match cmd {
                ServiceCmd::Apply { file } => service_cmds::apply(&home, &file, cli.json).await,
                ServiceCmd::Ls => service_cmds::ls(&home, cli.json).await,
                ServiceCmd::Status { name } => service_cmds::status(&home, &name, cli.json).await,
                ServiceCmd::Endpoints { name } => {
                    service_cmds::endpoints(&home, &name, cli.json).await
                }
                ServiceCmd::History { name } => {
                    service_cmds::history(&home, &name, cli.json).await
                }
                ServiceCmd::Scale { name, replicas } => {
                    service_cmds::scale(&home, &name, replicas, cli.json).await
                }
                ServiceCmd::Rollback { name, to_revision } => {
                    service_cmds::rollback(&home, &name, to_revision, cli.json).await
                }
                ServiceCmd::Logs { name } => service_cmds::logs(&home, &name, cli.json).await,
                ServiceCmd::Rm { name } => service_cmds::rm(&home, &name, cli.json).await,
            },
            Command::Peers => mesh_cmds::peers(&home, cli.json).await,
            Command::Node => mesh_cmds::node(&home).await,
            Command::Devnet(cmd) => match cmd {
                DevnetCmd::Up {
                    nodes,
                    dir,
                    gpu_nodes,
                } => {
                    let dir = dir.unwrap_or_else(mesh_cmds::default_devnet_dir);
                    mesh_cmds::devnet_up(&dir, nodes, &gpu_nodes).await
                }
                DevnetCmd::Down { dir } => {
                    mesh_cmds::devnet_down(&dir.unwrap_or_else(mesh_cmds::default_devnet_dir)).await
                }
                DevnetCmd::Status { dir } => {
                    let dir = dir.unwrap_or_else(mesh_cmds::default_devnet_dir);
                    mesh_cmds::devnet_status(&dir, cli.json).await
                }
            },
            Command::S3(cmd) => match cmd {
                S3Cmd::Key(S3KeyCmd::Create {
                    name,
                    buckets,
                    read_only,
                    access_key,
                    secret_key,
                }) => s3_cmds::key_create(
                    &home, name, &buckets, read_only, access_key, secret_key, cli.json,
                ),
                S3Cmd::Key(S3KeyCmd::Ls) => s3_cmds::key_ls(&home, cli.json),
                S3Cmd::Key(S3KeyCmd::Rm { access_key }) => s3_cmds::key_rm(&home, &access_key),
                S3Cmd::Expose {
                    reference,
                    bucket,
                    prefix,
                } => s3_cmds::expose(&home, &reference, &bucket, &prefix, cli.json).await,
            },
            command => {
                let backend = backend::Backend::connect(&home).await?;
                store_cmds::run(&backend, cli.json, command).await
            }
        }
    })
}

/// `weft init`: identity and config for a new node.
fn init(
    home: &Home,
    cluster_secret: Option<String>,
    bootstrap: Vec<String>,
    force: bool,
) -> anyhow::Result<()> {
    for b in &bootstrap {
        b.parse::<libp2p::Multiaddr>().map_err(|e| {
            anyhow::anyhow!(
                "--bootstrap {b:?} is not a multiaddr ({e}); give one like /ip4/10.0.0.5/udp/4001/quic-v1/p2p/PEER_ID (`weft node` on that machine prints its addresses)"
            )
        })?;
    }
    home.ensure()?;
    let path = home.config_path();
    if path.exists() && !force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it",
            path.display()
        );
    }
    let secret = match cluster_secret {
        Some(s) => {
            crate::config::parse_secret(&s)?;
            s.trim().to_lowercase()
        }
        None => crate::config::new_secret(),
    };
    let mut config = Config::load(home).unwrap_or_default();
    config.network.cluster_secret = Some(secret);
    if !bootstrap.is_empty() {
        config.network.bootstrap = bootstrap;
    }
    config.save(home)?;
    let peer = home.identity()?.public().to_peer_id();
    // the API's token, which the daemon would make on its first start
    home.ensure_api_token()?;
    println!("node {peer}");
    println!("config {}", path.display());
    Ok(())
}
