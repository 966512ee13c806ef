//! Attestation: evidence formats, issuers (node side), validators (pure Rust), measurements and attested TLS.
