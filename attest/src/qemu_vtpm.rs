//! The `qemu-vtpm` variant: a local QEMU VM whose TPM is a swtpm process on the host.
//!
//! There is no hardware root of trust: the attestation key is trusted because the host that
//! runs swtpm is trusted (it is the user's own machine). Every TPM check still applies — quote
//! signature, binding to nonce and user data, PCR digest, measurements, event-log replay — so a
//! guest that boots another image is still refused; a malicious host is not defended against.

use std::sync::Arc;

use crate::measurements::Measurements;
use crate::tpm::{HostTrustedAk, TpmValidator};
use crate::variant::Variant;

/// A validator for `qemu-vtpm` documents expecting `measurements`.
pub fn validator(measurements: Measurements) -> TpmValidator {
    TpmValidator::new(Variant::QemuVtpm, measurements, Arc::new(HostTrustedAk))
}
