//! Diagnostics, waiting and wording shared by every operation of the cluster resource.

use std::time::{Duration, Instant};

use constellation_attest::Validators;
use constellation_attest::Variant;
use constellation_attest::config::AttestationConfig;
use tfplugin::provider::Context;
use tfplugin::{AttributePath, Diagnostics};
use zeroize::Zeroizing;

use crate::cloud::{Cloud, NodeRecord};

pub(super) fn err(summary: &str, detail: impl Into<String>) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error(summary, detail);
    d
}

pub(super) fn err_at(path: &str, summary: &str, detail: impl Into<String>) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error_at(AttributePath::new(path), summary, detail);
    d
}

pub(super) fn validators_for(
    config_json: &str,
) -> Result<(AttestationConfig, Validators), Diagnostics> {
    let cfg = AttestationConfig::from_json(config_json.as_bytes()).map_err(|e| {
        err_at(
            "attestation_config",
            "Invalid attestation config",
            e.to_string(),
        )
    })?;
    let v = cfg.validators().map_err(|e| {
        err_at(
            "attestation_config",
            "Unsupported attestation config",
            e.to_string(),
        )
    })?;
    Ok((cfg, Validators::new(v)))
}

/// The master secret and its salt (recovery input).
pub(super) type MasterAndSalt = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// Waits with the context's cancellation and a deadline.
pub(super) async fn pause(ctx: &Context, deadline: Instant, what: &str) -> Result<(), Diagnostics> {
    if Instant::now() >= deadline {
        return Err(err(
            "Timed out",
            format!(
                "Timed out {what}. Raise the timeout in the `timeouts` block if the machine is slow (TCG emulation is)."
            ),
        ));
    }
    tokio::select! {
        () = ctx.cancellation().cancelled() => Err(err("Cancelled", format!("Cancelled {what}."))),
        () = tokio::time::sleep(Duration::from_secs(2)) => Ok(()),
    }
}

/// Fails when Terraform asked the provider to stop or the deadline passed (checked between
/// steps that cannot be interrupted, such as starting a VM).
pub(super) fn check_going(ctx: &Context, deadline: Instant, what: &str) -> Result<(), Diagnostics> {
    if ctx.is_cancelled() {
        return Err(err("Cancelled", format!("Cancelled before {what}.")));
    }
    if Instant::now() >= deadline {
        return Err(err(
            "Timed out",
            format!(
                "Timed out before {what}. Raise `timeouts.create` if the machine is slow (TCG emulation is)."
            ),
        ));
    }
    Ok(())
}

/// What a wait for nodes reports when it gives up.
pub(super) struct WaitWords {
    /// Summary when a waited-for node's machine went down.
    pub(super) stopped: &'static str,
    /// Per node when the deadline passes, e.g. "has not joined".
    pub(super) not_yet: &'static str,
    /// Summary when the deadline passes.
    pub(super) late: &'static str,
    /// For `pause`: "waiting for …".
    pub(super) waiting: &'static str,
}

/// One round of waiting for `pending` nodes: fails if one of them is down or the deadline is
/// near (each named with the end of its console log), else pauses.
pub(super) async fn wait_round(
    ctx: &Context,
    cloud: &dyn Cloud,
    pending: &[&NodeRecord],
    deadline: Instant,
    words: &WaitWords,
) -> Result<(), Diagnostics> {
    for n in pending {
        if machine_down(cloud, n).await {
            return Err(err(
                words.stopped,
                format!(
                    "{} is no longer running. Its console log ends with:\n{}",
                    n.name,
                    strip_ansi(&cloud.console_tail(n, 3000).await)
                ),
            ));
        }
    }
    if Instant::now() + Duration::from_secs(2) >= deadline {
        let mut detail = String::new();
        for n in pending {
            detail.push_str(&format!(
                "{} {}. Its console log ends with:\n{}\n",
                n.name,
                words.not_yet,
                strip_ansi(&cloud.console_tail(n, 3000).await)
            ));
        }
        return Err(err(words.late, detail));
    }
    pause(ctx, deadline, words.waiting).await
}

/// Validator messages number registers by index. The user should read the register's own
/// name: "PCR 9" for vTPM variants; "MRTD" / "RTMR2" for qemu-tdx (index 0 = MRTD,
/// 1..=4 = RTMR0..3, as upstream numbers them).
pub(super) fn name_registers(variant: Variant, text: &str) -> String {
    if variant != Variant::QemuTdx {
        return text.replace("index ", "PCR ");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("index ") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + "index ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<u32>() {
            Ok(0) => out.push_str("MRTD"),
            Ok(i @ 1..=4) => out.push_str(&format!("RTMR{}", i - 1)),
            _ => out.push_str(&rest[pos..pos + "index ".len() + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Removes ANSI escape sequences (the node logs in colour to its console).
pub(super) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates up to a final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether the node's machine is known to be down (off or gone). A failed look-up counts
/// as not down: waiting goes on, and the deadline reports it if it lasts.
pub(super) async fn machine_down(cloud: &dyn Cloud, node: &NodeRecord) -> bool {
    match cloud.machine_state(node).await {
        Ok(s) => s.is_down(),
        Err(e) => {
            tracing::warn!(node = %node.name, error = %e, "machine state unknown");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_are_named_per_variant() {
        let msg =
            "2 measurement(s) differ: index 9: expected aa, got bb; index 11: expected cc, got dd";
        assert_eq!(
            name_registers(Variant::QemuVtpm, msg),
            "2 measurement(s) differ: PCR 9: expected aa, got bb; PCR 11: expected cc, got dd"
        );
        let tdx = "index 0: expected aa, got bb; index 3: expected cc, got dd; index 7: x";
        assert_eq!(
            name_registers(Variant::QemuTdx, tdx),
            "MRTD: expected aa, got bb; RTMR2: expected cc, got dd; index 7: x"
        );
        assert_eq!(name_registers(Variant::QemuTdx, "no index"), "no index");
    }

    #[test]
    fn console_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m peer=10.42.0.100:1 x"),
            "2026  WARN peer=10.42.0.100:1 x"
        );
    }
}
