//! Kernel WireGuard configured through netlink (no `wg`/`ip` subprocesses).
//!
//! `defguard_wireguard_rs` speaks rtnetlink (link, address) and the WireGuard generic-netlink
//! family (device, peers). Its interface removal also tries to clean up DNS through
//! systemd-resolved or resolvconf, which the node image does not have, so the link is deleted
//! here with one RTM_DELLINK request of our own.

use std::collections::HashSet;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use defguard_wireguard_rs::key::Key as DgKey;
use defguard_wireguard_rs::net::IpAddrMask;
use defguard_wireguard_rs::peer::Peer as DgPeer;
use defguard_wireguard_rs::{InterfaceConfiguration, Kernel, WGApi, WireguardInterfaceApi};
use zeroize::Zeroize;

use super::{NetError, NetworkConfig, NetworkEncryption, PeerConfig, WgKeyPair, WgPublicKey};

/// Kernel WireGuard on this node (needs CAP_NET_ADMIN and the `wireguard` module).
#[derive(Debug)]
pub struct WireGuardNetwork {
    keys: WgKeyPair,
    /// The last configuration applied, to tell peer-only updates (no traffic disruption)
    /// from interface changes.
    applied: Mutex<Option<NetworkConfig>>,
}

impl WireGuardNetwork {
    /// Kernel WireGuard with this node's key pair.
    pub fn new(keys: WgKeyPair) -> Self {
        Self {
            keys,
            applied: Mutex::new(None),
        }
    }

    /// Public keys of the peers currently configured in the kernel for `interface`.
    pub fn kernel_peers(&self, interface: &str) -> Result<Vec<WgPublicKey>, NetError> {
        let api = api(interface)?;
        let host = api
            .read_interface_data()
            .map_err(|e| nl_err("read device", interface, e))?;
        let mut keys: Vec<WgPublicKey> = host
            .peers
            .keys()
            .map(|k| WgPublicKey(k.as_array()))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The listen port the kernel reports for `interface`.
    pub fn kernel_listen_port(&self, interface: &str) -> Result<u16, NetError> {
        let api = api(interface)?;
        let host = api
            .read_interface_data()
            .map_err(|e| nl_err("read device", interface, e))?;
        Ok(host.listen_port)
    }

    fn full_configure(&self, config: &NetworkConfig) -> Result<(), NetError> {
        let ifname = &config.interface;
        let mut api = api(ifname)?;
        if api.read_interface_data().is_err() {
            api.create_interface()
                .map_err(|e| nl_err("create link", ifname, e))?;
        }
        let mut iface = InterfaceConfiguration {
            name: ifname.clone(),
            prvkey: STANDARD.encode(self.keys.private_key().as_ref()),
            addresses: vec![IpAddrMask::new(config.address.addr, config.address.prefix)],
            port: config.listen_port,
            peers: config.peers.iter().map(to_dg_peer).collect(),
            mtu: None,
            fwmark: None,
        };
        // Flushes addresses, sets them, sets key and port with REPLACE_PEERS, then adds peers.
        let res = api.configure_interface(&iface);
        iface.prvkey.zeroize();
        res.map_err(|e| nl_err("configure device", ifname, e))
    }

    fn update_peers(&self, config: &NetworkConfig) -> Result<(), NetError> {
        let ifname = &config.interface;
        let api = api(ifname)?;
        let host = api
            .read_interface_data()
            .map_err(|e| nl_err("read device", ifname, e))?;
        let wanted: HashSet<[u8; 32]> = config.peers.iter().map(|p| p.public_key.0).collect();
        for key in host.peers.keys() {
            if !wanted.contains(&key.as_array()) {
                api.remove_peer(key)
                    .map_err(|e| nl_err("remove peer", ifname, e))?;
            }
        }
        for p in &config.peers {
            // Sets endpoint and keep-alive and replaces the allowed IPs of existing peers.
            api.configure_peer(&to_dg_peer(p))
                .map_err(|e| nl_err("set peer", ifname, e))?;
        }
        Ok(())
    }
}

fn api(ifname: &str) -> Result<WGApi<Kernel>, NetError> {
    WGApi::<Kernel>::new(ifname.to_string()).map_err(|e| nl_err("open", ifname, e))
}

fn nl_err(operation: &'static str, interface: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Netlink {
        operation,
        interface: interface.to_string(),
        message: e.to_string(),
    }
}

fn to_dg_peer(p: &PeerConfig) -> DgPeer {
    let mut peer = DgPeer::new(DgKey::new(p.public_key.0));
    peer.endpoint = p.endpoint;
    peer.persistent_keepalive_interval = p.persistent_keepalive.filter(|k| *k > 0);
    peer.allowed_ips = p
        .allowed_ips
        .iter()
        .map(|c| IpAddrMask::new(c.addr, c.prefix))
        .collect();
    peer
}

impl NetworkEncryption for WireGuardNetwork {
    fn public_key(&self) -> WgPublicKey {
        self.keys.public_key()
    }

    fn apply(&self, config: &NetworkConfig) -> Result<(), NetError> {
        config.validate()?;
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let link_exists = api(&config.interface)?.read_interface_data().is_ok();
        let same_interface = applied.as_ref().is_some_and(|a| {
            a.interface == config.interface
                && a.listen_port == config.listen_port
                && a.address == config.address
        });
        if link_exists && same_interface {
            self.update_peers(config)?;
        } else {
            self.full_configure(config)?;
        }
        *applied = Some(config.clone());
        Ok(())
    }

    fn teardown(&self) -> Result<(), NetError> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cfg) = applied.as_ref() {
            delete_link(&cfg.interface)?;
        }
        *applied = None;
        Ok(())
    }
}

/// Deletes a link by name with RTM_DELLINK; a missing link is not an error.
pub fn delete_link(ifname: &str) -> Result<(), NetError> {
    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_sys::{Socket, SocketAddr, constants::NETLINK_ROUTE};

    let err = |m: String| NetError::Netlink {
        operation: "delete link",
        interface: ifname.to_string(),
        message: m,
    };
    let mut link = LinkMessage::default();
    link.attributes
        .push(LinkAttribute::IfName(ifname.to_string()));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::DelLink(link)),
    );
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| err(format!("socket: {e}")))?;
    socket.bind_auto().map_err(|e| err(format!("bind: {e}")))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| err(format!("connect: {e}")))?;
    socket
        .send(&buf, 0)
        .map_err(|e| err(format!("send: {e}")))?;
    let mut recv = vec![0u8; 8192];
    let n = socket
        .recv(&mut &mut recv[..], 0)
        .map_err(|e| err(format!("recv: {e}")))?;
    let reply = recv
        .get(..n)
        .ok_or_else(|| err("short netlink reply".into()))?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply)
        .map_err(|e| err(format!("decode reply: {e}")))?;
    match msg.payload {
        NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
        NetlinkPayload::Error(e) => {
            let io = e.to_io();
            // ENODEV: already gone, which is what teardown wants.
            if io.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) {
                Ok(())
            } else {
                Err(err(io.to_string()))
            }
        }
        other => Err(err(format!("unexpected reply {other:?}"))),
    }
}
