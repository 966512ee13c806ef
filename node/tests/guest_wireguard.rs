//! Guest tier: kernel WireGuard between two QEMU guests on a private network.
//!
//! Each guest configures WireGuard through netlink (the agent's `WireGuardNetwork`), then the
//! client sends a marker over TCP to the server's tunnel address and gets it echoed back. The host
//! captures every frame of the private network (QEMU filter-dump) and checks: WireGuard UDP
//! packets are there (handshake and transport data), the marker is not; a plaintext canary sent
//! outside the tunnel *is* in the capture, which shows the capture would reveal a leak.
#![cfg(target_os = "linux")]

use std::time::Duration;

use constellation_image::vm::{Guest, Network};
use constellation_node::netcrypt::WgKeyPair;

const GUEST_BIN: &str = env!("CARGO_BIN_EXE_guest-tests");
const WG_PORT: u16 = 51820;

#[test]
fn two_guests_talk_only_through_wireguard() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("private-net.pcap");
    let (ep_a, ep_b) = Network::pair().unwrap();
    let a_keys = WgKeyPair::generate();
    let b_keys = WgKeyPair::generate();
    let marker = format!("SECRET-MARKER-{}", hex::encode(rand::random::<[u8; 8]>()));

    let args = |own: &WgKeyPair,
                own_tunnel: &str,
                peer: &WgKeyPair,
                peer_lan: &str,
                peer_tunnel: &str,
                role: &str| {
        vec![
            "wg".to_string(),
            "wg0".into(),
            hex::encode(own.private_key().as_ref()),
            own_tunnel.into(),
            WG_PORT.to_string(),
            peer.public_key().to_string(),
            format!("{peer_lan}:{WG_PORT}"),
            peer_tunnel.into(),
            role.into(),
            marker.clone(),
            format!("{peer_lan}:9"),
        ]
    };
    let a_args = args(
        &a_keys,
        "10.99.0.1/24",
        &b_keys,
        "192.168.77.2",
        "10.99.0.2",
        "server",
    );
    let b_args = args(
        &b_keys,
        "10.99.0.2/24",
        &a_keys,
        "192.168.77.1",
        "10.99.0.1",
        "client",
    );
    let a_ref: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_ref: Vec<&str> = b_args.iter().map(String::as_str).collect();

    let guest = |name: &str, args: &[&str]| {
        Guest::builder()
            .name(name)
            .binary(GUEST_BIN, args)
            .env("CONSTELLATION_GUEST_TESTS", "1")
            .memory_mib(384)
            .timeout(Duration::from_secs(600))
    };
    let a = guest("g-wg-a", &a_ref)
        .net_with_pcap(ep_a, Some("192.168.77.1/24"), &pcap)
        .spawn()
        .expect("spawn guest a");
    let b = guest("g-wg-b", &b_ref)
        .net(ep_b, Some("192.168.77.2/24"))
        .spawn()
        .expect("spawn guest b");
    let a_out = a.wait().expect("guest a");
    let b_out = b.wait().expect("guest b");
    for (n, o) in [("a", &a_out), ("b", &b_out)] {
        assert!(
            o.success(),
            "guest {n} failed (exit {:?}):\n{}\n{}",
            o.exit_code,
            o.serial_log,
            o.qemu_stderr
        );
    }
    assert!(
        a_out
            .serial_log
            .contains("GUEST-CHECK wg-server-received-marker ok")
    );
    assert!(
        b_out
            .serial_log
            .contains("GUEST-CHECK wg-client-got-reply ok")
    );
    for o in [&a_out, &b_out] {
        for c in ["wg-apply-idempotent", "wg-peer-add-remove", "wg-teardown"] {
            assert!(
                o.serial_log.contains(&format!("GUEST-CHECK {c} ok")),
                "missing {c}"
            );
        }
    }

    let cap = std::fs::read(&pcap).expect("read pcap");
    let frames = pcap_frames(&cap);
    assert!(!frames.is_empty(), "empty capture");
    let mut wg_types = std::collections::BTreeSet::new();
    for f in &frames {
        if let Some((src, dst, payload)) = udp_of(f)
            && (src == WG_PORT || dst == WG_PORT)
            && payload.get(1..4) == Some(&[0, 0, 0][..])
            && let Some(kind) = payload.first()
        {
            wg_types.insert(*kind);
        }
    }
    assert!(
        wg_types.contains(&1) && wg_types.contains(&2),
        "no WireGuard handshake seen: {wg_types:?}"
    );
    assert!(
        wg_types.contains(&4),
        "no WireGuard transport data seen: {wg_types:?}"
    );
    let contains = |needle: &[u8]| cap.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"PLAINTEXT-CANARY-"),
        "capture does not show plaintext payloads at all"
    );
    assert!(
        !contains(marker.as_bytes()),
        "the marker crossed the private network in plaintext"
    );
    assert!(!contains(b"SECRET-MARKER"), "marker prefix in plaintext");
}

/// Frames of a classic pcap file (either byte order); stops at the first truncated record.
fn pcap_frames(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let Some(magic) = b.get(..4) else { return out };
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file"),
    };
    let u32_at = |o: usize| -> Option<u32> {
        let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let mut off = 24;
    while let Some(len) = u32_at(off + 8) {
        let start = off + 16;
        let Some(frame) = b.get(start..start + len as usize) else {
            break;
        };
        out.push(frame);
        off = start + len as usize;
    }
    out
}

/// (source port, destination port, payload) of an Ethernet/IPv4/UDP frame.
fn udp_of(f: &[u8]) -> Option<(u16, u16, &[u8])> {
    if f.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = f.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    let src = u16::from_be_bytes(udp.get(0..2)?.try_into().ok()?);
    let dst = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    Some((src, dst, udp.get(8..)?))
}
