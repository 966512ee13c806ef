//! Private addresses of nodes: the lowest free address of the node network, so that
//! addresses of removed nodes are used again and a network of any size holds as many nodes
//! as it has addresses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::Role;

/// Host offsets below this stay free: clouds keep the first addresses of a subnet for their
/// router, DNS and future use (AWS the first four, GCP two, Azure four).
pub const FIRST_HOST: u32 = 10;
/// Where workers start looking, so that control planes keep the low addresses when there
/// is room (addresses then tell roles apart at a glance, as they always did).
pub const WORKER_START: u32 = 100;

/// No address is left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free address left in the node network {network}/{prefix} for {node}: {used} of its \
     {usable} usable addresses (host offsets {FIRST_HOST} up to the last before broadcast) are \
     taken; use a larger `network.node_cidr` or fewer nodes"
)]
pub struct Exhausted {
    /// The network.
    pub network: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The node that needed an address.
    pub node: String,
    /// Addresses in use inside the usable range.
    pub used: usize,
    /// Usable addresses.
    pub usable: u32,
}

/// The lowest free address of `network/prefix` for a new node of `role`, given the addresses
/// every recorded node (either role) holds. Control planes search from [`FIRST_HOST`];
/// workers from [`WORKER_START`] up, then from [`FIRST_HOST`]. The network and broadcast
/// addresses and the offsets below [`FIRST_HOST`] are never handed out.
pub fn allocate(
    network: Ipv4Addr,
    prefix: u8,
    role: Role,
    node: &str,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, Exhausted> {
    let base = u32::from(network);
    // Offsets FIRST_HOST..end are usable; `end` is the broadcast offset.
    let size = 1u64 << (32 - u32::from(prefix.min(32)));
    let end = u32::try_from(size.saturating_sub(1)).unwrap_or(u32::MAX);
    let start = match role {
        Role::ControlPlane => FIRST_HOST,
        Role::Worker => WORKER_START.clamp(FIRST_HOST, end.max(FIRST_HOST)),
    };
    let free = |o: &u32| !used.contains(&Ipv4Addr::from(base.wrapping_add(*o)));
    (start..end)
        .chain(FIRST_HOST..start.min(end))
        .find(free)
        .map(|o| Ipv4Addr::from(base.wrapping_add(o)))
        .ok_or_else(|| {
            let usable = end.saturating_sub(FIRST_HOST);
            Exhausted {
                network,
                prefix,
                node: node.to_owned(),
                used: (FIRST_HOST..end).filter(|o| !free(o)).count(),
                usable,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[[u8; 4]]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|a| Ipv4Addr::from(*a)).collect()
    }

    #[test]
    fn lowest_free_per_role_and_reuse() {
        let net = Ipv4Addr::new(10, 42, 0, 0);
        let none = BTreeSet::new();
        assert_eq!(
            allocate(net, 24, Role::ControlPlane, "c", &none).unwrap(),
            Ipv4Addr::new(10, 42, 0, 10)
        );
        assert_eq!(
            allocate(net, 24, Role::Worker, "w", &none).unwrap(),
            Ipv4Addr::new(10, 42, 0, 100)
        );
        // A removed worker's address is handed out again.
        let used = ips(&[[10, 42, 0, 10], [10, 42, 0, 101], [10, 42, 0, 102]]);
        assert_eq!(
            allocate(net, 24, Role::Worker, "w", &used).unwrap(),
            Ipv4Addr::new(10, 42, 0, 100)
        );
        assert_eq!(
            allocate(net, 24, Role::ControlPlane, "c", &used).unwrap(),
            Ipv4Addr::new(10, 42, 0, 11)
        );
    }

    #[test]
    fn roles_never_collide_even_past_their_start() {
        let net = Ipv4Addr::new(10, 42, 0, 0);
        // Ninety-one control planes reach into the workers' start; workers go on above them.
        let mut used = BTreeSet::new();
        for i in 0..91 {
            let ip = allocate(net, 24, Role::ControlPlane, "c", &used).unwrap();
            assert!(used.insert(ip), "{i}");
        }
        assert!(used.contains(&Ipv4Addr::new(10, 42, 0, 100)));
        let w = allocate(net, 24, Role::Worker, "w", &used).unwrap();
        assert_eq!(w, Ipv4Addr::new(10, 42, 0, 101));
    }

    #[test]
    fn workers_wrap_below_their_start_and_small_networks_work() {
        let net = Ipv4Addr::new(10, 42, 0, 0);
        let used: BTreeSet<Ipv4Addr> = (100..255).map(|o| Ipv4Addr::new(10, 42, 0, o)).collect();
        assert_eq!(
            allocate(net, 24, Role::Worker, "w", &used).unwrap(),
            Ipv4Addr::new(10, 42, 0, 10)
        );
        // A /28 has offsets 10..=14 usable (15 is broadcast).
        let net = Ipv4Addr::new(10, 1, 2, 16);
        let mut used = BTreeSet::new();
        for role in [
            Role::ControlPlane,
            Role::Worker,
            Role::Worker,
            Role::Worker,
            Role::Worker,
        ] {
            used.insert(allocate(net, 28, role, "n", &used).unwrap());
        }
        assert_eq!(
            used.iter().copied().max(),
            Some(Ipv4Addr::new(10, 1, 2, 30))
        );
        let e = allocate(net, 28, Role::Worker, "demo-worker-9", &used).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("10.1.2.16/28"), "{msg}");
        assert!(
            msg.contains("demo-worker-9") && msg.contains("5 of its 5"),
            "{msg}"
        );
    }

    #[test]
    fn the_network_and_broadcast_addresses_are_never_handed_out() {
        let net = Ipv4Addr::new(192, 168, 0, 0);
        let used: BTreeSet<Ipv4Addr> = (10..255).map(|o| Ipv4Addr::new(192, 168, 0, o)).collect();
        let e = allocate(net, 24, Role::ControlPlane, "c", &used).unwrap_err();
        assert_eq!(e.usable, 245);
        // A prefix too long to hold any usable host.
        assert!(allocate(net, 30, Role::Worker, "w", &BTreeSet::new()).is_err());
    }
}
