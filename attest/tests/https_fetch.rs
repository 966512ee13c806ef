//! The built-in HTTP client over TLS: a loopback HTTPS server with a test CA. Trusted through an
//! extra CA file it answers; with only the Mozilla roots, or another CA, the handshake fails with
//! a TLS error naming the certificate problem. Plain http:// keeps working.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use common::http::{Routes, Server};
use constellation_attest::certs::fetch::{FetchError, HttpGet, PlainHttp};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// An HTTPS server on 127.0.0.1 whose certificate (SAN 127.0.0.1) the CA issued; answers every
/// request with `body`. The thread ends with the test process.
fn https_server(ca: &Ca, body: &'static [u8]) -> String {
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            // A client that rejects the certificate ends the handshake: read fails, go on.
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            if req.is_empty() {
                continue;
            }
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(body);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    base
}

#[test]
fn https_with_the_extra_ca_file() {
    let ca = ca("Test Mirror CA");
    let base = https_server(&ca, b"vcek-bytes");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, &ca.pem).unwrap();
    let http = PlainHttp::default().with_extra_ca_file(&file).unwrap();
    let r = http.get(&format!("{base}/vcek/v1/Milan/abc")).unwrap();
    assert_eq!(r.body, b"vcek-bytes");
    // Headers go through TLS too (THIM, metadata-style requests).
    let r = http
        .get_with_headers(&format!("{base}/x"), &[("Metadata", "true")])
        .unwrap();
    assert_eq!(r.body, b"vcek-bytes");
}

#[test]
fn neg_https_untrusted_server_is_a_tls_error() {
    let ca = ca("Test Mirror CA");
    let base = https_server(&ca, b"never");
    // Mozilla roots only.
    let e = PlainHttp::default().get(&format!("{base}/a")).unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&base) && msg.contains("TLS") && msg.contains("certificate"),
        "{msg}"
    );
    // Another CA.
    let other = ca_pem_file("Another CA");
    let e = PlainHttp::default()
        .with_extra_ca_file(&other.1)
        .unwrap()
        .get(&format!("{base}/a"))
        .unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e}");
}

fn ca_pem_file(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, ca(name).pem).unwrap();
    (dir, file)
}

#[test]
fn neg_unusable_ca_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, b"not a certificate").unwrap();
    let e = PlainHttp::default().with_extra_ca_file(&file).unwrap_err();
    assert!(matches!(e, FetchError::CaFile { .. }), "{e}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = PlainHttp::default()
        .with_extra_ca_file(&missing)
        .unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

#[test]
fn plain_http_still_works_and_other_schemes_are_refused() {
    let mut routes = Routes::new();
    routes.insert(("GET".into(), "/p".into()), (200, b"plain".to_vec()));
    let s = Server::start(routes);
    let r = PlainHttp::default()
        .get(&format!("{}/p", s.base()))
        .unwrap();
    assert_eq!(r.body, b"plain");
    let e = PlainHttp::default().get("ftp://127.0.0.1/x").unwrap_err();
    assert!(matches!(e, FetchError::Scheme { .. }), "{e}");
}
