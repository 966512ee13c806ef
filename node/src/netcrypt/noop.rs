//! HOST-TIER ONLY network "encryption" that encrypts nothing.
//!
//! Host protocol tests run several agents as processes on loopback, without root or a
//! WireGuard module; they need a [`NetworkEncryption`] that validates and records the
//! configuration the join service hands out, and nothing more. Never used in the node image.

use std::sync::Mutex;

use super::{NetError, NetworkConfig, NetworkEncryption, WgKeyPair, WgPublicKey};

/// HOST-TIER ONLY: validates and records configurations, configures no interface.
#[derive(Debug)]
pub struct NoopNetwork {
    keys: WgKeyPair,
    applied: Mutex<Option<NetworkConfig>>,
}

impl NoopNetwork {
    /// A no-op network with the given key pair (so host tests still exchange real public keys).
    pub fn new(keys: WgKeyPair) -> Self {
        Self {
            keys,
            applied: Mutex::new(None),
        }
    }

    /// The configuration last passed to [`NetworkEncryption::apply`], for test assertions.
    pub fn applied(&self) -> Option<NetworkConfig> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl NetworkEncryption for NoopNetwork {
    fn public_key(&self) -> WgPublicKey {
        self.keys.public_key()
    }

    fn apply(&self, config: &NetworkConfig) -> Result<(), NetError> {
        config.validate()?;
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(config.clone());
        Ok(())
    }

    fn teardown(&self) -> Result<(), NetError> {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netcrypt::{IpCidr, PeerConfig};

    #[test]
    fn key_pair_roundtrip_and_redaction() {
        let kp = WgKeyPair::generate();
        let again = WgKeyPair::from_private(kp.private_key().clone());
        assert_eq!(kp.public_key(), again.public_key());
        let s = kp.public_key().to_string();
        assert_eq!(s.parse::<WgPublicKey>().unwrap(), kp.public_key());
        let dbg = format!("{kp:?}");
        let priv_b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            kp.private_key().as_ref(),
        );
        assert!(!dbg.contains(&priv_b64));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn known_x25519_vector() {
        // RFC 7748 section 6.1: Alice's private and public key.
        let private: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let kp = WgKeyPair::from_private(zeroize::Zeroizing::new(private));
        assert_eq!(
            hex::encode(kp.public_key().0),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!("10.0.0.1/24".parse::<IpCidr>().unwrap().prefix, 24);
        assert_eq!("10.0.0.1".parse::<IpCidr>().unwrap().prefix, 32);
        assert!("10.0.0.1/33".parse::<IpCidr>().is_err());
        assert!("fd00::/129".parse::<IpCidr>().is_err());
        assert!("x/1".parse::<IpCidr>().is_err());
    }

    #[test]
    fn noop_validates() {
        let net = NoopNetwork::new(WgKeyPair::generate());
        let peer = PeerConfig {
            public_key: WgKeyPair::generate().public_key(),
            endpoint: Some("127.0.0.1:51820".parse().unwrap()),
            allowed_ips: vec!["10.99.0.2/32".parse().unwrap()],
            persistent_keepalive: None,
        };
        let mut cfg = NetworkConfig {
            interface: "wg0".into(),
            listen_port: 51820,
            address: "10.99.0.1/24".parse().unwrap(),
            peers: vec![peer.clone()],
        };
        net.apply(&cfg).unwrap();
        assert_eq!(net.applied().unwrap(), cfg);
        cfg.peers.push(peer);
        assert!(net.apply(&cfg).is_err(), "duplicate peer must be rejected");
        cfg.peers.pop();
        cfg.interface = "a-very-long-interface-name".into();
        assert!(net.apply(&cfg).is_err());
    }
}
