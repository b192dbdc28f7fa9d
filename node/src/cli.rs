//! The `weft` command line.
//!
//! Each command parses its arguments here and calls the store (or, through
//! the API, a running daemon). Output is a table or plain ids for people and
//! JSON with `--json`; errors go to stderr as one `error:` line and a
//! non-zero exit status.

mod output;
mod store_cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Store maintenance.
    #[command(subcommand)]
    Store(StoreCmd),
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
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command whose output is piped into `head` should end quietly, as
    // other Unix tools do, rather than fail on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any other
    // thread exists; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_tracing(cli.log_format, "warn");
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
    store_cmds::run(&home, cli.json, cli.command)
}
