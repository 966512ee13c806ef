//! qemu-tdx evidence: arbitrary quote and CC event log bytes through the full validator, and
//! the CC event log replay on its own.
#![no_main]
use constellation_attest::document::TdxEvidence;
use constellation_attest::qemu_tdx::QemuTdxValidator;
use constellation_attest::tdx::ccel::replay_rtmrs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = replay_rtmrs(data);
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b) * 16)
        .min(data.len());
    let (quote, log) = data.split_at(split);
    let ev = TdxEvidence {
        quote: quote.to_vec(),
        event_log: Some(serde_bytes::ByteBuf::from(log.to_vec())),
        collateral: None,
    };
    if let Ok(v) = QemuTdxValidator::new(Default::default(), Default::default()) {
        let _ = v.validate_tdx_at(b"user", &ev, b"nonce", None);
    }
});
