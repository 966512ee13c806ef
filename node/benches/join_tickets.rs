//! JoinService throughput: join tickets per second including the attestation validation of
//! a pre-recorded document (recorded once from swtpm before timing), the ticket derivation
//! and member bookkeeping, for a cluster of 100 members (each ticket lists the other members as
//! WireGuard peers). Figures printed, nothing asserted.
//!
//! Run: `cargo bench -p constellation-node --bench join_tickets`

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use constellation_attest::validator::Issuer;
use constellation_node::services::join::issue_ticket;
use constellation_node_api::v1::IssueJoinTicketRequest;

fn main() {
    if !common::have_swtpm() {
        constellation_testkit::skip_current("swtpm is not on PATH", "run scripts/install-deps.sh");
        return;
    }
    let b = common::control_plane();
    // Pre-recorded evidence: one document for a fixed nonce, validated afresh each time.
    let nonce = [0x5au8; 32];
    let doc = b.tpm.issue(b"join", &nonce).unwrap().to_bytes();
    let n = 3000;
    let t0 = Instant::now();
    for i in 0..n {
        let claims = b
            .ctx
            .validators
            .validate_bytes(&doc, &nonce, b"join")
            .unwrap();
        let req = IssueJoinTicketRequest {
            node_name: format!("w-{}", i % 100),
            // One disk per name: a name that comes back is the same member asking again.
            disk_uuid: format!("{:08x}-0000-4000-8000-000000000000", i % 100),
            is_control_plane: false,
            wireguard_public_key: vec![1; 32],
            private_ip: "10.0.0.9".into(),
            image_version: "bench".into(),
        };
        let t = issue_ticket(&b.ctx, &req, &claims).unwrap();
        std::hint::black_box(t);
    }
    common::rate(
        "join tickets (validate pre-recorded qemu-vtpm doc + issue)",
        n,
        t0.elapsed(),
    );
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            b.ctx
                .validators
                .validate_bytes(&doc, &nonce, b"join")
                .unwrap(),
        );
    }
    common::rate("  of which: document validation alone", n, t0.elapsed());
    let claims = b
        .ctx
        .validators
        .validate_bytes(&doc, &nonce, b"join")
        .unwrap();
    let t0 = Instant::now();
    for i in 0..n {
        let req = IssueJoinTicketRequest {
            node_name: format!("w-{}", i % 100),
            disk_uuid: format!("{:08x}-0000-4000-8000-000000000000", i % 100),
            is_control_plane: false,
            wireguard_public_key: vec![1; 32],
            private_ip: "10.0.0.9".into(),
            image_version: "bench".into(),
        };
        std::hint::black_box(issue_ticket(&b.ctx, &req, &claims).unwrap());
    }
    common::rate(
        "  of which: ticket issuance alone (100 peers listed)",
        n,
        t0.elapsed(),
    );
}
