#![no_main]
//! TCG crypto-agile event log parsing and replay.
use constellation_attest::tpm::eventlog::EventLog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = EventLog::parse(data) {
        let _ = log.replay_sha256();
    }
});
