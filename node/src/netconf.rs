//! Static interface configuration from the instance metadata's `network` key, applied through
//! rtnetlink (no `ip` subprocesses; the image has none).
//!
//! Product mode only: `lo` up, then for each listed interface (found by MAC, since names depend
//! on probe order): link up, address added, default route when a gateway is given. Applying is
//! idempotent (existing addresses and routes are replaced), so a restarted agent can run it
//! again.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::metadata::{InterfaceAddress, format_mac};

/// Errors configuring interfaces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetconfError {
    /// No interface carries a MAC the metadata lists.
    #[error(
        "no network interface has MAC {mac} (listed in the metadata key \"network\"); present: \
         {present}; check the VM's NIC MAC addresses"
    )]
    NoSuchInterface {
        /// The MAC that was looked for.
        mac: String,
        /// `name=mac` of the interfaces that exist.
        present: String,
    },
    /// The kernel refused a request or the socket failed.
    #[error("netlink {operation} on {interface} failed: {message}")]
    Netlink {
        /// What was being done.
        operation: &'static str,
        /// Interface name or MAC.
        interface: String,
        /// The kernel's error.
        message: String,
    },
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (empty for `lo`-like links without one).
    pub mac: Vec<u8>,
}

/// How long to wait for a NIC to appear (virtio NICs can show up after the agent starts).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Brings `lo` up and applies `config`; waits up to `wait` for every listed MAC to appear.
pub fn apply(config: &[InterfaceAddress], wait: Duration) -> Result<(), NetconfError> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    if let Some(lo) = links.iter().find(|l| l.name == "lo") {
        nl.set_up(lo)?;
    }
    let deadline = Instant::now() + wait;
    for iface in config {
        let link = loop {
            let links = nl.links()?;
            if let Some(l) = links.iter().find(|l| l.mac == iface.mac) {
                break l.clone();
            }
            if Instant::now() >= deadline {
                return Err(NetconfError::NoSuchInterface {
                    mac: iface.mac_string(),
                    present: links
                        .iter()
                        .map(|l| format!("{}={}", l.name, format_mac(&l.mac)))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        nl.set_up(&link)?;
        nl.add_address(&link, iface.address, iface.prefix)?;
        if let Some(gw) = iface.gateway {
            nl.add_default_route(&link, gw)?;
        }
        tracing::info!(
            interface = %link.name,
            mac = %iface.mac_string(),
            address = %format!("{}/{}", iface.address, iface.prefix),
            gateway = ?iface.gateway,
            "network interface configured"
        );
    }
    Ok(())
}

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, constants::NETLINK_ROUTE};

/// A blocking rtnetlink socket.
struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> Result<Self, NetconfError> {
        let err = |op: &'static str, e: std::io::Error| NetconfError::Netlink {
            operation: op,
            interface: "-".into(),
            message: e.to_string(),
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| err("socket", e))?;
        socket.bind_auto().map_err(|e| err("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| err("connect", e))?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends one request and collects the replies until the ACK (or DONE for dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        operation: &'static str,
        interface: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetconfError> {
        let err = |message: String| NetconfError::Netlink {
            operation,
            interface: interface.to_string(),
            message,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| err(format!("send: {e}")))?;
        let mut out = Vec::new();
        let mut recv = vec![0u8; 32 * 1024];
        loop {
            let n = self
                .socket
                .recv(&mut &mut recv[..], 0)
                .map_err(|e| err(format!("recv: {e}")))?;
            let mut data = recv.get(..n).unwrap_or_default();
            while !data.is_empty() {
                let len = NetlinkBuffer::new_checked(data)
                    .map_err(|e| err(format!("reply: {e}")))?
                    .length() as usize;
                let (one, rest) = data
                    .split_at_checked(len.max(16))
                    .ok_or_else(|| err("truncated netlink reply".into()))?;
                data = rest;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one)
                    .map_err(|e| err(format!("decode reply: {e}")))?;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(_) => return Err(err(e.to_io().to_string())),
                    },
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn links(&mut self) -> Result<Vec<Link>, NetconfError> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
            "list links",
            "*",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .map(|l| {
                let mut link = Link {
                    index: l.header.index,
                    name: String::new(),
                    mac: Vec::new(),
                };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => link.name = n,
                        LinkAttribute::Address(m) => link.mac = m,
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    fn set_up(&mut self, link: &Link) -> Result<(), NetconfError> {
        let mut m = LinkMessage::default();
        m.header.index = link.index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            "set link up",
            &link.name,
        )
        .map(drop)
    }

    fn add_address(&mut self, link: &Link, addr: IpAddr, prefix: u8) -> Result<(), NetconfError> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr);
        m.header.prefix_len = prefix;
        m.header.scope = AddressScope::Universe;
        m.header.index = link.index;
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            "add address",
            &link.name,
        )
        .map(drop)
    }

    fn add_default_route(&mut self, link: &Link, gateway: IpAddr) -> Result<(), NetconfError> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(gateway);
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        m.attributes.push(RouteAttribute::Oif(link.index));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            "add default route",
            &link.name,
        )
        .map(drop)
    }
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listing links needs no privileges; every Linux host has `lo`.
    #[test]
    fn lists_links_including_loopback() {
        let links = Netlink::open().unwrap().links().unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
    }

    /// A MAC nobody has is an error naming it (after the wait).
    #[test]
    fn unknown_mac_is_an_error_naming_it() {
        let cfg = [InterfaceAddress {
            mac: [0x02, 0, 0, 0xde, 0xad, 0x01],
            address: "10.99.0.1".parse().unwrap(),
            prefix: 24,
            gateway: None,
        }];
        // `lo` up is a no-op when it is already up; without CAP_NET_ADMIN it fails first,
        // which is fine for this test too as long as the error is a netlink one.
        match apply(&cfg, Duration::from_millis(200)) {
            Err(NetconfError::NoSuchInterface { mac, present }) => {
                assert_eq!(mac, "02:00:00:de:ad:01");
                assert!(present.contains("lo="), "{present}");
            }
            Err(NetconfError::Netlink { operation, .. }) => assert_eq!(operation, "set link up"),
            Ok(()) => panic!("an absent MAC must not configure"),
        }
    }
}
