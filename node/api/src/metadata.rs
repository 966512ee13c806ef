//! Instance metadata: what the host tells a node about itself, as the producers (the
//! provider's backends, the image's VM harness) write it and the node agent reads it.
//!
//! Each value is a UTF-8 text under a key of [`keys`]. On QEMU every key is a fw_cfg file
//! named [`fw_cfg_name`]`(key)`; cloud backends will carry the same keys in their instance
//! metadata. [`NodeMetadata::encode`] and [`NodeMetadata::decode`] are the two directions of
//! one format; the decoder treats its input as untrusted and never panics.

use std::fmt;
use std::net::IpAddr;

/// Largest metadata value the node reads, in bytes.
pub const MAX_VALUE_BYTES: u64 = 64 * 1024;

/// Prefix of the QEMU fw_cfg names of metadata keys.
pub const FW_CFG_PREFIX: &str = "opt/constellation/";

/// The QEMU fw_cfg name of a metadata key (`opt/constellation/<key>`).
pub fn fw_cfg_name(key: &str) -> String {
    format!("{FW_CFG_PREFIX}{key}")
}

/// The metadata keys.
pub mod keys {
    /// `control-plane` or `worker`.
    pub const ROLE: &str = "role";
    /// Node name.
    pub const NAME: &str = "name";
    /// Private IP address.
    pub const PRIVATE_IP: &str = "private-ip";
    /// Join endpoints, `host:port`, separated by commas or newlines.
    pub const JOIN_ENDPOINTS: &str = "join-endpoints";
    /// argon2id PHC string of the init secret.
    pub const INIT_SECRET_HASH: &str = "init-secret-hash";
    /// Image version.
    pub const IMAGE_VERSION: &str = "image-version";
    /// Static interface configuration, one line per interface (see
    /// [`super::parse_network`]).
    pub const NETWORK: &str = "network";

    /// Every key, in the order producers write them.
    pub const ALL: [&str; 7] = [
        ROLE,
        NAME,
        PRIVATE_IP,
        IMAGE_VERSION,
        NETWORK,
        JOIN_ENDPOINTS,
        INIT_SECRET_HASH,
    ];
}

/// Metadata that is absent or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A required key is absent or empty.
    #[error("metadata key {key:?} is missing; the host must provide it")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A value is malformed.
    #[error("metadata key {key:?} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Serves init/join/key/verification/recovery/management.
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

impl Role {
    /// `control-plane` or `worker` (the metadata spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = MetadataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "control-plane" | "controlplane" => Ok(Role::ControlPlane),
            "worker" => Ok(Role::Worker),
            other => Err(MetadataError::Invalid {
                key: keys::ROLE,
                reason: format!("{other:?} is neither \"control-plane\" nor \"worker\""),
            }),
        }
    }
}

/// One line of the `network` key: `<mac> <address>/<prefix>[ via <gateway>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// MAC address that identifies the interface.
    pub mac: [u8; 6],
    /// Address to add.
    pub address: IpAddr,
    /// Prefix length of `address`.
    pub prefix: u8,
    /// Default gateway through this interface, if any.
    pub gateway: Option<IpAddr>,
}

impl InterfaceAddress {
    /// The MAC in the usual `52:54:00:…` form.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

impl fmt::Display for InterfaceAddress {
    /// The line as [`parse_network`] reads it (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.mac_string(), self.address, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        Ok(())
    }
}

/// Formats a MAC address as lower-case colon-separated hex.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a colon-separated MAC address (`52:54:00:c0:00:01`, either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The `network` value for these interfaces: one line each, newline-terminated.
pub fn format_network(interfaces: &[InterfaceAddress]) -> String {
    interfaces.iter().map(|i| format!("{i}\n")).collect()
}

/// Parses the `network` key: one interface per non-empty line,
/// `<mac> <address>/<prefix>[ via <gateway>]`. Pure and panic-free (fuzzed).
pub fn parse_network(value: &str) -> Result<Vec<InterfaceAddress>, MetadataError> {
    let mut out: Vec<InterfaceAddress> = Vec::new();
    for (n, line) in value.lines().map(str::trim).enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| MetadataError::Invalid {
            key: keys::NETWORK,
            reason: format!("line {}: {reason}", n + 1),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (mac, cidr, gateway) = match words.as_slice() {
            [mac, cidr] => (*mac, *cidr, None),
            [mac, cidr, "via", gw] => (*mac, *cidr, Some(*gw)),
            _ => {
                return Err(bad(format!(
                    "{line:?}: expected \"<mac> <address>/<prefix>[ via <gateway>]\""
                )));
            }
        };
        let mac = parse_mac(mac).ok_or_else(|| bad(format!("{mac:?} is not a MAC address")))?;
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad(format!("{cidr:?} has no /prefix")))?;
        let address: IpAddr = addr
            .parse()
            .map_err(|e| bad(format!("address {addr:?}: {e}")))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad(format!("prefix {prefix:?} is not in 0..={max}")))?;
        let gateway = gateway
            .map(|g| {
                g.parse::<IpAddr>()
                    .map_err(|e| bad(format!("gateway {g:?}: {e}")))
                    .and_then(|gw| {
                        if gw.is_ipv4() == address.is_ipv4() {
                            Ok(gw)
                        } else {
                            Err(bad(format!(
                                "gateway {g} and address {addr} differ in family"
                            )))
                        }
                    })
            })
            .transpose()?;
        if out.iter().any(|i| i.mac == mac) {
            return Err(bad(format!("{} is listed twice", format_mac(&mac))));
        }
        out.push(InterfaceAddress {
            mac,
            address,
            prefix,
            gateway,
        });
    }
    Ok(out)
}

/// What the metadata says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetadata {
    /// Role.
    pub role: Role,
    /// Node name (unique in the cluster).
    pub name: String,
    /// Address on the private network.
    pub private_ip: IpAddr,
    /// Join-service endpoints (`host:port`) of control planes to try.
    pub join_endpoints: Vec<String>,
    /// argon2id PHC hash of the one-time init secret (first control plane only).
    pub init_secret_hash: Option<String>,
    /// Image version, when the host passes it (otherwise the agent's built-in one).
    pub image_version: Option<String>,
    /// Static interface configuration (key `network`); empty: leave networking alone.
    pub network: Vec<InterfaceAddress>,
}

impl NodeMetadata {
    /// The `(key, value)` pairs a producer writes, in [`keys::ALL`] order; optional values
    /// that are absent or empty are left out.
    pub fn encode(&self) -> Vec<(&'static str, String)> {
        let mut items = vec![
            (keys::ROLE, self.role.as_str().to_owned()),
            (keys::NAME, self.name.clone()),
            (keys::PRIVATE_IP, self.private_ip.to_string()),
        ];
        if let Some(v) = self.image_version.as_ref().filter(|v| !v.is_empty()) {
            items.push((keys::IMAGE_VERSION, v.clone()));
        }
        if !self.network.is_empty() {
            items.push((keys::NETWORK, format_network(&self.network)));
        }
        if !self.join_endpoints.is_empty() {
            items.push((keys::JOIN_ENDPOINTS, self.join_endpoints.join(",")));
        }
        if let Some(h) = self.init_secret_hash.as_ref().filter(|h| !h.is_empty()) {
            items.push((keys::INIT_SECRET_HASH, h.clone()));
        }
        items
    }

    /// Reads the metadata from cleaned values (`value(key)`, `None` when absent). Pure and
    /// panic-free on any input (fuzzed).
    pub fn decode<'a>(
        value: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Self, MetadataError> {
        let required = |key: &'static str| match value(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(MetadataError::Missing { key }),
        };
        let optional = |key: &'static str| value(key).filter(|v| !v.is_empty()).map(str::to_owned);
        let role = required(keys::ROLE)?.parse()?;
        let name = required(keys::NAME)?;
        if name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(MetadataError::Invalid {
                key: keys::NAME,
                reason: "use 1..=63 characters of [A-Za-z0-9.-]".into(),
            });
        }
        let ip = required(keys::PRIVATE_IP)?;
        let private_ip = ip.parse().map_err(|e| MetadataError::Invalid {
            key: keys::PRIVATE_IP,
            reason: format!("{ip:?}: {e}"),
        })?;
        let join_endpoints = value(keys::JOIN_ENDPOINTS)
            .unwrap_or_default()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let network = match value(keys::NETWORK) {
            Some(v) => parse_network(v)?,
            None => Vec::new(),
        };
        Ok(NodeMetadata {
            role,
            name: name.to_owned(),
            private_ip,
            join_endpoints,
            init_secret_hash: optional(keys::INIT_SECRET_HASH),
            image_version: optional(keys::IMAGE_VERSION),
            network,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sample() -> NodeMetadata {
        NodeMetadata {
            role: Role::ControlPlane,
            name: "demo-cp-0".into(),
            private_ip: "10.42.0.2".parse().unwrap(),
            join_endpoints: vec!["10.42.0.3:30090".into(), "10.42.0.4:30090".into()],
            init_secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$abc$def".into()),
            image_version: Some("v0.1.0".into()),
            network: vec![
                InterfaceAddress {
                    mac: [0x52, 0x54, 0, 0xc0, 0, 2],
                    address: "10.0.2.15".parse().unwrap(),
                    prefix: 24,
                    gateway: Some("10.0.2.2".parse().unwrap()),
                },
                InterfaceAddress {
                    mac: [0x52, 0x54, 0, 0xc1, 0, 2],
                    address: "10.42.0.2".parse().unwrap(),
                    prefix: 24,
                    gateway: None,
                },
            ],
        }
    }

    fn decode_items(items: &[(&'static str, String)]) -> Result<NodeMetadata, MetadataError> {
        let map: BTreeMap<&str, &str> = items.iter().map(|(k, v)| (*k, v.as_str())).collect();
        NodeMetadata::decode(|k| map.get(k).copied())
    }

    #[test]
    fn encode_decode_round_trip() {
        let m = sample();
        let items = m.encode();
        assert_eq!(items.iter().map(|(k, _)| *k).collect::<Vec<_>>(), keys::ALL);
        assert_eq!(decode_items(&items).unwrap(), m);

        let minimal = NodeMetadata {
            role: Role::Worker,
            join_endpoints: vec![],
            init_secret_hash: None,
            image_version: None,
            network: vec![],
            ..sample()
        };
        let items = minimal.encode();
        assert_eq!(items.len(), 3);
        assert_eq!(decode_items(&items).unwrap(), minimal);
    }

    #[test]
    fn network_line_round_trip() {
        let n = sample().network;
        let text = format_network(&n);
        assert_eq!(
            text,
            "52:54:00:c0:00:02 10.0.2.15/24 via 10.0.2.2\n52:54:00:c1:00:02 10.42.0.2/24\n"
        );
        assert_eq!(parse_network(&text).unwrap(), n);
        let v6 = [InterfaceAddress {
            mac: [2, 0, 0, 0, 0, 0xff],
            address: "fd00::5".parse().unwrap(),
            prefix: 64,
            gateway: Some("fd00::1".parse().unwrap()),
        }];
        assert_eq!(parse_network(&format_network(&v6)).unwrap(), v6);
    }

    #[test]
    fn network_key() {
        let n = parse_network(
            "52:54:00:C0:00:01 10.0.2.15/24 via 10.0.2.2\n\n  52:54:00:c1:00:01 10.42.0.11/24\n",
        )
        .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].mac_string(), "52:54:00:c0:00:01");
        assert_eq!(n[0].address, "10.0.2.15".parse::<IpAddr>().unwrap());
        assert_eq!(n[0].prefix, 24);
        assert_eq!(n[0].gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(n[1].gateway, None);
        assert!(parse_network("").unwrap().is_empty());
        for bad in [
            "52:54:00:c0:00 10.0.0.1/24",
            "52:54:00:c0:00:01:02 10.0.0.1/24",
            "52:54:00:c0:00:zz 10.0.0.1/24",
            "52:54:00:c0:00:01 10.0.0.1",
            "52:54:00:c0:00:01 10.0.0.1/33",
            "52:54:00:c0:00:01 10.0.0.300/24",
            "52:54:00:c0:00:01 10.0.0.1/24 via",
            "52:54:00:c0:00:01 10.0.0.1/24 via fe80::1",
            "52:54:00:c0:00:01 10.0.0.1/24 gw 10.0.0.2",
            "52:54:00:c0:00:01 10.0.0.1/24\n52:54:00:c0:00:01 10.0.0.2/24",
        ] {
            let err = parse_network(bad).unwrap_err().to_string();
            assert!(err.contains("\"network\""), "{bad}: {err}");
        }
    }

    /// Every prefix and every single-byte change of valid input, multi-byte characters and
    /// huge numbers included: the parser returns, it never panics.
    #[test]
    fn network_parser_never_panics() {
        let valid = "52:54:00:c0:00:01 10.0.2.15/24 via 10.0.2.2\n52:54:00:c1:00:01 fd00::1/64\n";
        let specials = [
            0u8, b' ', b'\n', b'/', b':', b'.', b'9', b'f', b'z', 0x80, 0xc3, 0xff,
        ];
        for cut in 0..=valid.len() {
            let _ = parse_network(valid.get(..cut).unwrap_or_default());
            for s in specials {
                let mut b = valid.as_bytes().to_vec();
                if let Some(x) = b.get_mut(cut) {
                    *x = s;
                }
                let _ = parse_network(&String::from_utf8_lossy(&b));
            }
        }
        for odd in [
            "é é/é via é",
            "52:54:00:c0:00:01 10.0.0.1/99999999999999999999",
            "52:54:00:c0:00:01 /",
            "::::: 1/1",
            "52:54:00:c0:00:0é 10.0.0.1/24",
        ] {
            assert!(parse_network(odd).is_err(), "{odd}");
        }
    }

    #[test]
    fn decode_refuses_bad_values() {
        let mut items = sample().encode();
        assert_eq!(
            decode_items(&items[1..]).unwrap_err(),
            MetadataError::Missing { key: keys::ROLE }
        );
        items[0].1 = "boss".into();
        assert!(matches!(
            decode_items(&items),
            Err(MetadataError::Invalid { key: "role", .. })
        ));
        items[0].1 = "controlplane".into();
        items[1].1 = "bad/name".into();
        assert!(matches!(
            decode_items(&items),
            Err(MetadataError::Invalid { key: "name", .. })
        ));
        items[1].1 = "ok".into();
        items[2].1 = "10.0.0.300".into();
        assert!(matches!(
            decode_items(&items),
            Err(MetadataError::Invalid {
                key: "private-ip",
                ..
            })
        ));
    }

    #[test]
    fn role_spellings() {
        for r in [Role::ControlPlane, Role::Worker] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(
            serde_json::to_string(&Role::ControlPlane).unwrap(),
            "\"control-plane\""
        );
    }

    #[test]
    fn fw_cfg_names() {
        assert_eq!(fw_cfg_name(keys::NETWORK), "opt/constellation/network");
    }
}
