//! Node-to-node network encryption: kernel WireGuard between all nodes of a cluster.
//!
//! Each node generates its own X25519 key pair locally ([`WgKeyPair::generate`]); only the public
//! key leaves the node (through the join service). The join service hands every node the list of
//! peers ({public key, endpoint, allowed IPs}); the agent applies it with
//! [`NetworkEncryption::apply`], which is idempotent: calling it again with a changed peer list
//! adds, updates and removes peers so that the interface matches the configuration exactly.
//!
//! Implementations: [`WireGuardNetwork`] (kernel WireGuard configured through netlink) and
//! [`NoopNetwork`] (HOST-TIER ONLY: records the configuration, encrypts nothing).

mod noop;
#[cfg(target_os = "linux")]
mod wireguard;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

pub use noop::NoopNetwork;
#[cfg(target_os = "linux")]
pub use wireguard::{WireGuardNetwork, delete_link};

/// A WireGuard (X25519) public key. Displays and parses as standard base64 (like `wg`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WgPublicKey(pub [u8; 32]);

impl fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}

impl FromStr for WgPublicKey {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|e| NetError::InvalidConfig {
                reason: format!("public key {s:?} is not base64: {e}"),
            })?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| NetError::InvalidConfig {
                reason: format!("public key {s:?} has {} bytes, expected 32", b.len()),
            })?;
        Ok(Self(arr))
    }
}

/// A node's own WireGuard key pair. The private key is zeroized on drop, never leaves the node
/// and never appears in `Debug` output.
#[derive(Clone)]
pub struct WgKeyPair {
    private: Zeroizing<[u8; 32]>,
    public: WgPublicKey,
}

impl WgKeyPair {
    /// Generates a fresh key pair from the operating system's CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut private = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(private.as_mut());
        Self::from_private(private)
    }

    /// Rebuilds a key pair from stored private key bytes (e.g. from the encrypted state disk, so
    /// that a rebooted node keeps its identity). The bytes are clamped as X25519 requires.
    pub fn from_private(private: Zeroizing<[u8; 32]>) -> Self {
        let secret = x25519_dalek::StaticSecret::from(*private);
        let public = WgPublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        // Store the clamped form, as `wg` does, so the kernel and we agree byte for byte.
        let clamped = Zeroizing::new(secret.to_bytes());
        Self {
            private: clamped,
            public,
        }
    }

    /// The public key, to be shared with peers through the join service.
    pub fn public_key(&self) -> WgPublicKey {
        self.public
    }

    /// The private key bytes (for persisting on the encrypted state disk or handing to the
    /// kernel). Do not log them.
    pub fn private_key(&self) -> &Zeroizing<[u8; 32]> {
        &self.private
    }
}

impl fmt::Debug for WgKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgKeyPair")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// An IP network in CIDR notation (`10.9.0.0/16`, `fd00::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl IpCidr {
    /// Builds a CIDR, checking the prefix length against the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, NetError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(NetError::InvalidConfig {
                reason: format!("prefix /{prefix} is longer than {max} for {addr}"),
            });
        }
        Ok(Self { addr, prefix })
    }

    /// A single-host network (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = |why: String| NetError::InvalidConfig {
            reason: format!("CIDR {s:?}: {why}"),
        };
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|e| bad(format!("{e}")))?;
                let prefix: u8 = p.parse().map_err(|e| bad(format!("prefix: {e}")))?;
                Self::new(addr, prefix)
            }
            None => Ok(Self::host(s.parse().map_err(|e| bad(format!("{e}")))?)),
        }
    }
}

/// One peer of the node-to-node mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key (from the join service).
    pub public_key: WgPublicKey,
    /// Where the peer's WireGuard listens (its private-network address and port), if known.
    pub endpoint: Option<SocketAddr>,
    /// Tunnel addresses routed to this peer (usually its own tunnel address as /32).
    pub allowed_ips: Vec<IpCidr>,
    /// Keep-alive interval in seconds (None or 0 = off).
    pub persistent_keepalive: Option<u16>,
}

/// The desired state of the node's WireGuard interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Interface name (≤ 15 bytes, e.g. `wg0`).
    pub interface: String,
    /// UDP listen port.
    pub listen_port: u16,
    /// This node's tunnel address with the mesh's prefix (e.g. `10.99.0.1/24`); the prefix
    /// installs the on-link route for the mesh.
    pub address: IpCidr,
    /// All other nodes. Peers not listed are removed from the interface.
    pub peers: Vec<PeerConfig>,
}

impl NetworkConfig {
    /// Checks what the kernel would reject, with a message naming the field.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |reason: String| Err(NetError::InvalidConfig { reason });
        if self.interface.is_empty()
            || self.interface.len() > 15
            || !self
                .interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(format!(
                "interface name {:?} must be 1-15 characters of [A-Za-z0-9_-]",
                self.interface
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if !seen.insert(p.public_key) {
                return bad(format!("peer {} is listed twice", p.public_key));
            }
        }
        Ok(())
    }
}

/// Errors of network encryption setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The configuration is invalid.
    #[error("invalid network encryption config: {reason}")]
    InvalidConfig {
        /// What was wrong and where.
        reason: String,
    },
    /// A netlink request to the kernel failed.
    #[error(
        "netlink {operation} for interface {interface} failed: {message} (is the wireguard kernel module loaded and are we CAP_NET_ADMIN?)"
    )]
    Netlink {
        /// What was being done.
        operation: &'static str,
        /// The interface.
        interface: String,
        /// The kernel's or library's error text.
        message: String,
    },
}

/// Node-to-node encryption (see the module documentation).
///
/// Methods block on netlink round trips (milliseconds); async callers may call them directly or
/// through `spawn_blocking`.
pub trait NetworkEncryption: Send + Sync {
    /// This node's public key (to publish through the join service).
    fn public_key(&self) -> WgPublicKey;

    /// Brings the interface into exactly the state `config` describes: creates it if missing,
    /// sets the private key and listen port, the address, link up, and the peer set (adding,
    /// updating and removing peers). Idempotent.
    fn apply(&self, config: &NetworkConfig) -> Result<(), NetError>;

    /// Removes the interface (if present). Idempotent.
    fn teardown(&self) -> Result<(), NetError>;
}
