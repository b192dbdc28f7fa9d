//! The weft daemon and CLI: the artifact store, the libp2p mesh, the QUIC
//! data plane, the scheduler, the REST API, and the `weft` command that
//! drives them.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod home;
pub mod image;
pub mod ledger;
pub mod net;
pub mod pipeline;
pub mod resources;
pub mod s3;
pub mod sched;
pub mod service;
pub mod store;
pub mod tags;
pub mod transfer;
