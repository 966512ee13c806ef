//! The go-plugin handshake: the environment Terraform starts a plugin with, and the line
//! the plugin answers with on stdout.
//!
//! Terraform (through HashiCorp's go-plugin) starts the provider binary with a magic cookie,
//! the plugin protocol versions it speaks, a port range and — with AutoMTLS — its client
//! certificate. The plugin listens, then prints one line:
//! `CORE-VERSION|APP-PROTOCOL-VERSION|NETWORK|ADDRESS|PROTOCOL|SERVER-CERT`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;

/// Name of the environment variable carrying the magic cookie.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// The magic cookie value Terraform sets for providers.
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's core protocol version (the first field of the handshake line).
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The Terraform plugin protocol major version this crate implements.
pub const PROTOCOL_VERSION: u32 = 6;

/// Why the handshake cannot proceed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The magic cookie is missing or wrong: the binary was not started by Terraform.
    #[error(
        "This binary is a plugin. These are not meant to be executed directly.\n\
         It is a Terraform provider: Terraform starts it when needed. Declare it in a \
         `required_providers` block of your configuration and run `terraform init` and \
         `terraform plan` instead of running this file by hand."
    )]
    NotStartedByTerraform,
    /// Terraform offered no protocol version this plugin speaks.
    #[error(
        "incompatible plugin protocol: Terraform offers version(s) {offered:?} but this provider \
         speaks protocol {PROTOCOL_VERSION}; use Terraform 1.0 or newer"
    )]
    UnsupportedProtocol {
        /// The versions Terraform offered in PLUGIN_PROTOCOL_VERSIONS.
        offered: String,
    },
    /// An environment variable holds something unusable.
    #[error("invalid {name}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// Its value (never secret: ports, versions, paths).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A unix socket in a fresh private directory under `dir` (or the system temp dir).
    Unix {
        /// Parent directory for the socket's directory (PLUGIN_UNIX_SOCKET_DIR).
        dir: Option<PathBuf>,
    },
    /// Loopback TCP on a port in the inclusive range.
    Tcp {
        /// Lowest port to try (PLUGIN_MIN_PORT).
        min_port: u16,
        /// Highest port to try (PLUGIN_MAX_PORT).
        max_port: u16,
    },
}

/// What Terraform asked for, parsed from the environment.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// The negotiated plugin protocol version (always [`PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// Terraform's AutoMTLS client certificate (PEM), when TLS is requested.
    pub client_cert_pem: Option<String>,
    /// Parent directory for the unix socket (PLUGIN_UNIX_SOCKET_DIR).
    pub unix_socket_dir: Option<PathBuf>,
    /// Lowest TCP port to use (PLUGIN_MIN_PORT, default 10000).
    pub min_port: u16,
    /// Highest TCP port to use (PLUGIN_MAX_PORT, default 25000).
    pub max_port: u16,
}

impl fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("protocol_version", &self.protocol_version)
            .field("auto_mtls", &self.client_cert_pem.is_some())
            .field("unix_socket_dir", &self.unix_socket_dir)
            .field("ports", &(self.min_port..=self.max_port))
            .finish()
    }
}

impl HandshakeConfig {
    /// Parses the process environment.
    pub fn from_env() -> Result<Self, HandshakeError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(|name| env.get(name).cloned())
    }

    /// The listener to open: a unix socket on Unix (as go-plugin does), loopback TCP within
    /// the port range elsewhere or when `force_tcp` is set.
    pub fn transport(&self, force_tcp: bool) -> Transport {
        if cfg!(unix) && !force_tcp {
            Transport::Unix {
                dir: self.unix_socket_dir.clone(),
            }
        } else {
            Transport::Tcp {
                min_port: self.min_port,
                max_port: self.max_port,
            }
        }
    }

    /// Parses the handshake variables from `lookup` (the environment, or a map in tests).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, HandshakeError> {
        if lookup(MAGIC_COOKIE_KEY).as_deref() != Some(MAGIC_COOKIE_VALUE) {
            return Err(HandshakeError::NotStartedByTerraform);
        }

        let protocol_version = match lookup("PLUGIN_PROTOCOL_VERSIONS") {
            // Older go-plugin clients do not send the list; they expect the app version.
            None => PROTOCOL_VERSION,
            Some(offered) => {
                let supported = offered
                    .split(',')
                    .map(str::trim)
                    .any(|v| v.parse::<u32>() == Ok(PROTOCOL_VERSION));
                if !supported {
                    return Err(HandshakeError::UnsupportedProtocol { offered });
                }
                PROTOCOL_VERSION
            }
        };

        let client_cert_pem = lookup("PLUGIN_CLIENT_CERT").filter(|pem| !pem.trim().is_empty());

        let min_port = parse_port(&lookup, "PLUGIN_MIN_PORT")?.unwrap_or(10000);
        let max_port = parse_port(&lookup, "PLUGIN_MAX_PORT")?.unwrap_or(25000);
        if min_port > max_port {
            return Err(HandshakeError::InvalidEnv {
                name: "PLUGIN_MIN_PORT",
                value: min_port.to_string(),
                reason: format!("greater than PLUGIN_MAX_PORT={max_port}"),
            });
        }
        let unix_socket_dir = lookup("PLUGIN_UNIX_SOCKET_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);

        Ok(Self {
            protocol_version,
            client_cert_pem,
            unix_socket_dir,
            min_port,
            max_port,
        })
    }
}

fn parse_port(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<u16>, HandshakeError> {
    match lookup(name) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => {
            value
                .trim()
                .parse::<u16>()
                .map(Some)
                .map_err(|e| HandshakeError::InvalidEnv {
                    name,
                    value,
                    reason: format!("not a port number: {e}"),
                })
        }
    }
}

/// The address the plugin listens on, as announced in the handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(std::net::SocketAddr),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// Formats the handshake line (without trailing newline).
///
/// `server_cert_der` is the server certificate when TLS is on; go-plugin expects it as
/// standard base64 without padding.
pub fn handshake_line(
    protocol_version: u32,
    addr: &ListenAddr,
    server_cert_der: Option<&[u8]>,
) -> String {
    let (network, address) = match addr {
        ListenAddr::Unix(path) => ("unix", path.display().to_string()),
        ListenAddr::Tcp(sock) => ("tcp", sock.to_string()),
    };
    let mut line = format!("{CORE_PROTOCOL_VERSION}|{protocol_version}|{network}|{address}|grpc");
    if let Some(der) = server_cert_der {
        line.push('|');
        line.push_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(der));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn missing_or_wrong_cookie_gives_friendly_error() {
        let err = HandshakeConfig::from_vars(vars(&[])).unwrap_err();
        assert!(matches!(err, HandshakeError::NotStartedByTerraform));
        let text = err.to_string();
        assert!(text.contains("terraform init"), "{text}");
        assert!(text.contains("not meant to be executed directly"), "{text}");

        let err = HandshakeConfig::from_vars(vars(&[(MAGIC_COOKIE_KEY, "nope")])).unwrap_err();
        assert!(matches!(err, HandshakeError::NotStartedByTerraform));
    }

    #[test]
    fn negotiates_protocol_6() {
        let cfg = HandshakeConfig::from_vars(vars(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "5,6"),
        ]))
        .unwrap();
        assert_eq!(cfg.protocol_version, 6);
        assert_eq!(cfg.client_cert_pem, None);

        let err = HandshakeConfig::from_vars(vars(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "4,5"),
        ]))
        .unwrap_err();
        assert!(matches!(err, HandshakeError::UnsupportedProtocol { .. }));
        assert!(err.to_string().contains("4,5"));

        // No list at all: go-plugin then expects the app protocol version.
        let cfg =
            HandshakeConfig::from_vars(vars(&[(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)])).unwrap();
        assert_eq!(cfg.protocol_version, 6);
    }

    #[test]
    fn transport_selection_and_port_errors() {
        let cfg = HandshakeConfig::from_vars(vars(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_MIN_PORT", "10000"),
            ("PLUGIN_MAX_PORT", "10010"),
            ("PLUGIN_CLIENT_CERT", "-----BEGIN CERTIFICATE-----\n..."),
        ]))
        .unwrap();
        assert_eq!(
            cfg.transport(true),
            Transport::Tcp {
                min_port: 10000,
                max_port: 10010
            }
        );
        if cfg!(unix) {
            assert_eq!(cfg.transport(false), Transport::Unix { dir: None });
        }
        assert!(cfg.client_cert_pem.is_some());
        assert!(!format!("{cfg:?}").contains("BEGIN"), "no cert in Debug");

        let cfg = HandshakeConfig::from_vars(vars(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_UNIX_SOCKET_DIR", "/run/x"),
        ]))
        .unwrap();
        assert_eq!(cfg.unix_socket_dir, Some(PathBuf::from("/run/x")));
        assert_eq!((cfg.min_port, cfg.max_port), (10000, 25000));

        let err = HandshakeConfig::from_vars(vars(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_MIN_PORT", "http"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("PLUGIN_MIN_PORT"), "{err}");

        let err = HandshakeConfig::from_vars(vars(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_MIN_PORT", "2000"),
            ("PLUGIN_MAX_PORT", "1000"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("greater than"), "{err}");
    }

    #[test]
    fn handshake_line_format() {
        let line = handshake_line(6, &ListenAddr::Unix("/tmp/p/plugin.sock".into()), None);
        assert_eq!(line, "1|6|unix|/tmp/p/plugin.sock|grpc");
        let line = handshake_line(
            6,
            &ListenAddr::Tcp("127.0.0.1:10001".parse().unwrap()),
            Some(&[0xde, 0xad, 0xbe, 0xef, 0x01]),
        );
        // Unpadded standard base64.
        assert_eq!(line, "1|6|tcp|127.0.0.1:10001|grpc|3q2+7wE");
    }
}
