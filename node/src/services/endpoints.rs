//! Where a node looks for control planes to join or rejoin through.
//!
//! The metadata names the control planes that existed when the node was created. Control
//! planes come and go (rolling upgrades replace every one of them, scaling removes some), so a
//! node that reboots later may find none of them. Every node therefore also keeps the
//! join-service endpoints of the control planes it last heard of from the cluster (join and
//! rejoin tickets, workers' `GetPeers` polls, control planes' own member list) and remembers
//! them on its state disk's header, which is readable before the disk is unlocked.
//!
//! The list is a hint, not a trust decision: whoever answers at an endpoint is not
//! authenticated by the handshake (only the joiner attests), so the answers are proven
//! instead — a rejoin ticket must open the disk and match the cluster ID the disk recorded
//! before the node locks itself to it, and a `GetPeers` answer must carry the member's
//! authenticator. It is only checked for shape (socket addresses, at most [`MAX_REMEMBERED`]).

use std::net::SocketAddr;
use std::sync::Mutex;

use crate::metadata::Role;
use crate::state::ClusterState;

/// Most endpoints remembered (and accepted from a ticket or poll).
pub const MAX_REMEMBERED: usize = 32;

/// The control-plane endpoints a node learned from the cluster.
#[derive(Debug)]
pub struct KnownEndpoints {
    join_port: u16,
    learned: Mutex<Vec<String>>,
}

impl Default for KnownEndpoints {
    fn default() -> Self {
        Self::new(constellation_node_api::ports::JOIN)
    }
}

impl KnownEndpoints {
    /// `join_port`: the port every control plane of the cluster serves the join service on
    /// (the agents of one cluster share their port configuration).
    pub fn new(join_port: u16) -> Self {
        Self {
            join_port,
            learned: Mutex::new(Vec::new()),
        }
    }

    /// The join-service port assumed for every control plane.
    pub fn join_port(&self) -> u16 {
        self.join_port
    }

    /// Join-service endpoints of the control planes in `cluster` other than `except`, on
    /// this node's join port.
    pub fn of_control_planes(&self, cluster: &ClusterState, except: &str) -> Vec<String> {
        control_plane_endpoints(cluster, except, self.join_port)
    }

    /// The learned endpoints (sorted, unique).
    pub fn learned(&self) -> Vec<String> {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the learned list with the well-formed entries of `list` other than `own`
    /// (sorted, unique, at most [`MAX_REMEMBERED`]). Returns the new list if it changed.
    pub fn replace(&self, list: &[String], own: &str) -> Option<Vec<String>> {
        let clean = sanitize(list, own);
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if *learned == clean {
            return None;
        }
        learned.clone_from(&clean);
        Some(clean)
    }
}

/// Keeps entries that parse as socket addresses, drops `own`, sorts, dedups and caps.
pub fn sanitize(list: &[String], own: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .filter_map(|e| e.trim().parse::<SocketAddr>().ok())
        .map(|a| a.to_string())
        .filter(|a| a != own)
        .collect();
    v.sort();
    v.dedup();
    v.truncate(MAX_REMEMBERED);
    v
}

/// Join-service endpoints of the control planes in `cluster`, except `except` (a node name).
pub fn control_plane_endpoints(cluster: &ClusterState, except: &str, port: u16) -> Vec<String> {
    let list: Vec<String> = cluster
        .members
        .iter()
        .filter(|(name, m)| m.role == Role::ControlPlane && name.as_str() != except)
        .filter_map(|(_, m)| m.private_ip.parse().ok())
        .map(|ip| SocketAddr::new(ip, port).to_string())
        .collect();
    sanitize(&list, "")
}

/// The endpoints to try, in order: the metadata's (the host's current view) first, then the
/// learned ones not already listed.
pub fn merged(metadata: &[String], learned: &[String]) -> Vec<String> {
    let mut out = metadata.to_vec();
    for e in learned {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Member;

    fn member(role: Role, ip: &str) -> Member {
        Member {
            role,
            image_version: String::new(),
            attestation_summary: String::new(),
            joined_at: String::new(),
            private_ip: ip.into(),
            disk_uuid: String::new(),
            wireguard_public_key: String::new(),
            wireguard_address: String::new(),
        }
    }

    #[test]
    fn control_planes_only_without_the_asker() {
        let mut c = ClusterState::default();
        c.members
            .insert("cp-0".into(), member(Role::ControlPlane, "10.0.0.2"));
        c.members
            .insert("cp-1".into(), member(Role::ControlPlane, "10.0.0.3"));
        c.members
            .insert("w-0".into(), member(Role::Worker, "10.0.0.4"));
        c.members
            .insert("cp-bad".into(), member(Role::ControlPlane, "not an ip"));
        assert_eq!(
            control_plane_endpoints(&c, "cp-0", 30090),
            ["10.0.0.3:30090"]
        );
        assert_eq!(
            control_plane_endpoints(&c, "w-0", 30090),
            ["10.0.0.2:30090", "10.0.0.3:30090"]
        );
    }

    #[test]
    fn replace_cleans_and_reports_changes() {
        let k = KnownEndpoints::new(30090);
        let list = [
            "10.0.0.3:30090".to_string(),
            "garbage".into(),
            "10.0.0.2:30090".into(),
            "10.0.0.3:30090".into(),
            "10.0.0.9:30090".into(),
        ];
        assert_eq!(
            k.replace(&list, "10.0.0.9:30090"),
            Some(vec!["10.0.0.2:30090".into(), "10.0.0.3:30090".into()])
        );
        assert_eq!(k.replace(&list, "10.0.0.9:30090"), None, "unchanged");
        let many: Vec<String> = (0..100).map(|i| format!("10.0.1.{i}:1")).collect();
        assert_eq!(k.replace(&many, "").map(|v| v.len()), Some(MAX_REMEMBERED));
    }

    #[test]
    fn metadata_first_then_learned() {
        let m = ["10.0.0.2:30090".to_string()];
        let l = ["10.0.0.2:30090".to_string(), "10.0.0.5:30090".into()];
        assert_eq!(merged(&m, &l), ["10.0.0.2:30090", "10.0.0.5:30090"]);
        assert_eq!(merged(&[], &l), l);
    }
}
