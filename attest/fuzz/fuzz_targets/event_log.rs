#![no_main]
//! The one TCG crypto-agile event log parser (TPM logs, TDX CC event logs, the image's
//! predicted log): parsing and replay of every bank must never panic.
use constellation_attest::eventlog::{EventLog, TPM_ALG_SHA256, TPM_ALG_SHA384};
use constellation_attest::tdx::ccel::replay_rtmrs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = EventLog::parse(data) {
        for &(alg, _) in &log.algorithms {
            let _ = log.replay(alg);
        }
        let _ = log.replay(TPM_ALG_SHA256);
        let _ = log.replay(TPM_ALG_SHA384);
    }
    let _ = replay_rtmrs(data);
});
