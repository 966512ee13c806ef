//! The node agent: bootstrapper, join/key/verification/recovery services, state disk and
//! node-to-node encryption. The binary in `main.rs` is a thin entry point over this library.
