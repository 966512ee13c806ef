//! The node agent: bootstrapper, join/key/verification/recovery services, state disk and
//! node-to-node encryption. The binary in `main.rs` is a thin entry point over this library.

pub mod disk;
#[cfg(target_os = "linux")]
pub mod netconf;
pub mod netcrypt;

pub mod attestation;
pub mod bootstrap;
pub mod ca;
pub mod keys;
pub mod lock;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod platform;
pub mod rlimit;
pub mod services;
pub mod state;
pub mod tpm;
pub mod transport;
