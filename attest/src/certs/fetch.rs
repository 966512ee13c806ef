//! Fetchers for AMD KDS (VCEK, cert chains) and Intel PCS (TDX TCB info, QE identity, PCK CRL)
//! with an on-disk cache. Every endpoint is a configurable base URL; HTTP goes through the
//! [`HttpGet`] trait so callers can plug in their own TLS stack.
//!
//! The built-in [`PlainHttp`] speaks blocking HTTP/1.1 for `http://` (tests, link-local metadata
//! services, local mirrors) and `https://` (AMD KDS, Intel PCS, cloud APIs) — TLS through the
//! rustls and aws-lc-rs the crate already links for aTLS, trusting the Mozilla roots
//! (webpki-roots, so nodes need no system CA store) plus an optional extra CA bundle for private
//! mirrors and tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Upper bound on a response body.
pub const MAX_BODY: usize = 4 << 20;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL scheme is not supported by this client.
    #[error("{url}: scheme not supported (use http:// or https://)")]
    Scheme {
        /// URL.
        url: String,
    },
    /// The TLS handshake or session failed (e.g. the server certificate does not chain to a
    /// trusted root: add the mirror's CA with an extra CA file).
    #[error("{url}: TLS: {message}")]
    Tls {
        /// URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The extra CA file cannot be used.
    #[error(
        "extra CA file {path}: {message} (expected a PEM bundle of CA certificates)",
        path = path.display()
    )]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Network or I/O error.
    #[error("{url}: {source}")]
    Io {
        /// URL.
        url: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Non-200 status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Malformed response.
    #[error("{url}: malformed HTTP response ({reason})")]
    Malformed {
        /// URL.
        url: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The body is not the JSON the endpoint documents.
    #[error("{url}: response is not the expected JSON: {reason}")]
    Json {
        /// URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The client cannot send request headers.
    #[error("{url}: this HTTP client cannot send the request headers the endpoint needs")]
    HeadersUnsupported {
        /// URL.
        url: String,
    },
    /// A header the protocol needs is missing.
    #[error("{url}: response lacks header {header}")]
    MissingHeader {
        /// URL.
        url: String,
        /// Header name.
        header: &'static str,
    },
}

/// A response: body and headers (names lower-cased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Body bytes.
    pub body: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// First header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP GET.
pub trait HttpGet: Send + Sync {
    /// GETs `url`; non-200 is an error.
    fn get(&self, url: &str) -> Result<Response, FetchError>;

    /// GETs `url` with extra request headers (cloud APIs and metadata services need them:
    /// `Authorization`, `Metadata: true`, `Metadata-Flavor: Google`). Clients that cannot send
    /// headers refuse rather than silently dropping them.
    fn get_with_headers(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, FetchError> {
        if headers.is_empty() {
            self.get(url)
        } else {
            Err(FetchError::HeadersUnsupported { url: url.into() })
        }
    }
}

/// Blocking HTTP/1.1 client for `http://` and `https://` (name kept from when it spoke plain
/// HTTP only), with a timeout.
#[derive(Clone)]
pub struct PlainHttp {
    /// Connect/read timeout.
    pub timeout: Duration,
    /// TLS configuration with the extra roots; `None`: the Mozilla roots only.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PlainHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainHttp")
            .field("timeout", &self.timeout)
            .field("extra_roots", &self.tls.is_some())
            .finish()
    }
}

impl Default for PlainHttp {
    fn default() -> Self {
        Self::with_timeout(Duration::from_secs(30))
    }
}

fn tls_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for c in extra {
        roots.add(c.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The Mozilla-roots configuration, built once.
fn default_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CFG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CFG.get_or_init(|| tls_config(&[]).map(Arc::new)).clone()
}

impl PlainHttp {
    /// A client with this timeout, trusting the Mozilla roots for https.
    pub fn with_timeout(timeout: Duration) -> Self {
        PlainHttp { timeout, tls: None }
    }

    /// Also trusts the CA certificates of this PEM bundle for https (a private mirror's CA, a
    /// test CA).
    pub fn with_extra_ca_pem(mut self, pem: &[u8], origin: &Path) -> Result<Self, FetchError> {
        let err = |message: String| FetchError::CaFile {
            path: origin.to_path_buf(),
            message,
        };
        let certs: Vec<_> = crate::certs::Cert::from_pem_bundle(pem)
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
            .collect();
        self.tls = Some(Arc::new(tls_config(&certs).map_err(err)?));
        Ok(self)
    }

    /// Also trusts the CA certificates in the PEM file at `path`.
    pub fn with_extra_ca_file(self, path: &Path) -> Result<Self, FetchError> {
        let pem = std::fs::read(path).map_err(|e| FetchError::CaFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.with_extra_ca_pem(&pem, path)
    }
}

impl HttpGet for PlainHttp {
    fn get(&self, url: &str) -> Result<Response, FetchError> {
        self.request("GET", url, &[], &[])
    }

    fn get_with_headers(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, FetchError> {
        self.request("GET", url, headers, &[])
    }
}

impl PlainHttp {
    /// One HTTP/1.1 request (`method` e.g. GET or PUT) with extra headers and a body; non-200
    /// is an error. Header values may be secrets (tokens): they are never logged.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, FetchError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(FetchError::Scheme { url: url.into() });
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                rest.get(i..).unwrap_or("/"),
            ),
            None => (rest, "/"),
        };
        let io = |source| FetchError::Io {
            url: url.into(),
            source,
        };
        // host[:port]; an IPv6 literal is bracketed.
        let (name, addr) = match host.rsplit_once(':') {
            Some((n, p)) if !p.contains(']') => (n, host.to_string()),
            _ => (host, format!("{host}:{}", if tls { 443 } else { 80 })),
        };
        let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .map_err(io)?
            .collect();
        let first = addrs.first().ok_or_else(|| FetchError::Malformed {
            url: url.into(),
            reason: "host",
        })?;
        let s = TcpStream::connect_timeout(first, self.timeout).map_err(io)?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n"
        );
        for (n, v) in headers {
            if n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                return Err(FetchError::Malformed {
                    url: url.into(),
                    reason: "request header contains a line break",
                });
            }
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let buf = if tls {
            let tls_err = |message: String| FetchError::Tls {
                url: url.into(),
                message,
            };
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => default_tls().map_err(tls_err)?,
            };
            let server = rustls::pki_types::ServerName::try_from(
                name.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .map_err(|e| tls_err(format!("server name {name:?}: {e}")))?;
            let conn = rustls::ClientConnection::new(config, server)
                .map_err(|e| tls_err(e.to_string()))?;
            let mut stream = rustls::StreamOwned::new(conn, s);
            exchange(&mut stream, &req, body).map_err(|e| match e.get_ref() {
                // Certificate and handshake failures come back as I/O errors wrapping
                // rustls::Error; name them as TLS failures.
                Some(inner) if inner.is::<rustls::Error>() => tls_err(inner.to_string()),
                _ => io(e),
            })?
        } else {
            let mut s = s;
            exchange(&mut s, &req, body).map_err(io)?
        };
        parse_response(url, &buf)
    }
}

/// Writes the request and reads the whole response (the server closes: `Connection: close`).
fn exchange(s: &mut (impl Read + Write), req: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut buf = Vec::new();
    match s.take((MAX_BODY + 65536) as u64).read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        // Some servers close without TLS close_notify. The response is still complete when it
        // has a Content-Length (parse_response checks the body against it); without one a
        // truncation could not be told apart, so that stays an error.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && has_content_length(&buf) => {
            Ok(buf)
        }
        Err(e) => Err(e),
    }
}

fn has_content_length(buf: &[u8]) -> bool {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    String::from_utf8_lossy(buf.get(..end).unwrap_or_default())
        .to_ascii_lowercase()
        .contains("\r\ncontent-length:")
}

fn parse_response(url: &str, buf: &[u8]) -> Result<Response, FetchError> {
    let bad = |reason| FetchError::Malformed {
        url: url.into(),
        reason,
    };
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| bad("header not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        return Err(bad("chunked transfer encoding not supported"));
    }
    let mut body = buf.get(end + 4..).unwrap_or_default().to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(bad("body shorter than Content-Length"));
        }
        body.truncate(len);
    }
    if status != 200 {
        return Err(FetchError::Status {
            url: url.into(),
            status,
        });
    }
    Ok(Response { body, headers })
}

/// An on-disk cache keyed by SHA-256 of the URL. Entries are immutable certificates/collateral;
/// verification (signatures, validity) still runs on every use, so a stale entry fails closed.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    max_age: Option<Duration>,
}

impl DiskCache {
    /// A cache in `dir` (created on first write) whose entries never expire (right for
    /// certificates, which are immutable).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache {
            dir: dir.into(),
            max_age: None,
        }
    }

    /// A cache whose entries are refetched once older than `max_age` — for PCS collateral,
    /// which expires at its nextUpdate (about a month) and must be fresh when a node attaches
    /// it to evidence.
    pub fn with_max_age(dir: impl Into<PathBuf>, max_age: Duration) -> Self {
        DiskCache {
            dir: dir.into(),
            max_age: Some(max_age),
        }
    }

    fn fresh(&self, p: &std::path::Path) -> bool {
        let Some(max) = self.max_age else {
            return true;
        };
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age <= max)
    }

    fn path(&self, url: &str) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(url.as_bytes())))
    }

    /// GET through the cache (body and headers stored as JSON).
    pub fn get(&self, http: &dyn HttpGet, url: &str) -> Result<Response, FetchError> {
        let p = self.path(url);
        if self.fresh(&p)
            && let Ok(b) = std::fs::read(&p)
            && let Ok((body, headers)) =
                serde_json::from_slice::<(String, Vec<(String, String)>)>(&b)
            && let Ok(body) = hex::decode(body)
        {
            return Ok(Response { body, headers });
        }
        let r = http.get(url)?;
        let io = |source| FetchError::Io {
            url: url.into(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = p.with_extension("tmp");
        let data = serde_json::to_vec(&(hex::encode(&r.body), &r.headers)).unwrap_or_default();
        std::fs::write(&tmp, data).map_err(io)?;
        std::fs::rename(&tmp, &p).map_err(io)?;
        Ok(r)
    }
}

/// AMD Key Distribution Service client.
pub struct Kds {
    /// Base URL (default `https://kdsintf.amd.com`).
    pub base: String,
    /// HTTP client.
    pub http: Box<dyn HttpGet>,
    /// Cache.
    pub cache: DiskCache,
}

impl Kds {
    /// VCEK (DER) for a chip and reported TCB (Milan/Genoa parameter names).
    pub fn vcek(
        &self,
        generation: &str,
        hwid: &[u8],
        tcb: &crate::snp::Tcb,
    ) -> Result<Vec<u8>, FetchError> {
        let url = format!(
            "{}/vcek/v1/{generation}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
            self.base.trim_end_matches('/'),
            hex::encode(hwid),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        );
        Ok(self.cache.get(self.http.as_ref(), &url)?.body)
    }

    /// ASK+ARK (`vcek`) or ASVK+ARK (`vlek`) chain, PEM.
    pub fn cert_chain(&self, generation: &str, kind: &str) -> Result<Vec<u8>, FetchError> {
        let url = format!(
            "{}/{kind}/v1/{generation}/cert_chain",
            self.base.trim_end_matches('/')
        );
        Ok(self.cache.get(self.http.as_ref(), &url)?.body)
    }
}

/// Intel Provisioning Certification Service client for TDX collateral.
pub struct Pcs {
    /// Base URL (default `https://api.trustedservices.intel.com`).
    pub base: String,
    /// HTTP client.
    pub http: Box<dyn HttpGet>,
    /// Cache.
    pub cache: DiskCache,
}

fn url_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(c) = b.get(i) {
        if *c == b'%'
            && let Some(h) = b.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(*c);
        i += 1;
    }
    out
}

impl Pcs {
    /// Fetches TCB info, QE identity (with their issuer chains) and the platform PCK CRL.
    pub fn tdx_collateral(
        &self,
        fmspc: &[u8; 6],
    ) -> Result<crate::tdx::CollateralFiles, FetchError> {
        let base = self.base.trim_end_matches('/');
        let tcb_url = format!(
            "{base}/tdx/certification/v4/tcb?fmspc={}",
            hex::encode(fmspc)
        );
        let tcb = self.cache.get(self.http.as_ref(), &tcb_url)?;
        let chain = tcb
            .header("tcb-info-issuer-chain")
            .ok_or(FetchError::MissingHeader {
                url: tcb_url.clone(),
                header: "TCB-Info-Issuer-Chain",
            })?;
        let qe_url = format!("{base}/tdx/certification/v4/qe/identity");
        let qe = self.cache.get(self.http.as_ref(), &qe_url)?;
        // Both CRLs: a verifier that requires a TCB status refuses collateral without them.
        let crl_url = format!("{base}/sgx/certification/v4/pckcrl?ca=platform&encoding=der");
        let pck_crl = self.cache.get(self.http.as_ref(), &crl_url)?.body;
        let root_url = format!("{base}/sgx/certification/v4/rootcacrl");
        let root_crl = der_or_hex(self.cache.get(self.http.as_ref(), &root_url)?.body);
        Ok(crate::tdx::CollateralFiles {
            tcb_info: Some(tcb.body.clone()),
            qe_identity: Some(qe.body),
            tcb_signing_chain: Some(url_decode(chain)),
            pck_crl: Some(pck_crl),
            root_ca_crl: Some(root_crl),
        })
    }
}

/// PCS serves the root CA CRL as DER, older API versions as its hex encoding; a DER CRL starts
/// with a SEQUENCE tag (0x30), never with two hex digits.
fn der_or_hex(body: Vec<u8>) -> Vec<u8> {
    let text = body.trim_ascii();
    if text.len() >= 2
        && text.len().is_multiple_of(2)
        && text.iter().all(u8::is_ascii_hexdigit)
        && let Ok(der) = hex::decode(text)
    {
        return der;
    }
    body
}

/// Azure Trusted Hardware Identity Management (THIM): the VCEK bundle the Azure host caches for
/// its CVMs, served by the instance metadata service.
pub struct Thim {
    /// Base URL (default `http://169.254.169.254`, the link-local IMDS address).
    pub base: String,
    /// HTTP client.
    pub http: Box<dyn HttpGet>,
}

/// Default THIM/IMDS base URL.
pub const THIM_DEFAULT_BASE: &str = "http://169.254.169.254";

/// A THIM VCEK bundle (`GET /metadata/THIM/amd/certification`, header `Metadata: true`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThimBundle {
    /// The VCEK of this chip at the current TCB (PEM).
    pub vcek_cert: String,
    /// The TCB the VCEK was issued for, as a 16-digit hex TCB_VERSION.
    pub tcbm: String,
    /// ASK then ARK (PEM).
    pub certificate_chain: String,
    /// Seconds the host caches the bundle.
    #[serde(default)]
    pub cache_control: Option<String>,
}

impl ThimBundle {
    /// Parses a THIM response body (untrusted; the certificates are verified by the SNP
    /// verifier against the pinned ARK, so THIM is only a transport).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let b: ThimBundle = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !b.vcek_cert.contains("BEGIN CERTIFICATE") {
            return Err("vcekCert is not PEM".into());
        }
        if b.tcbm.len() != 16 || !b.tcbm.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("tcbm {:?} is not 16 hex digits", b.tcbm));
        }
        Ok(b)
    }

    /// The TCB_VERSION the VCEK was issued for.
    pub fn tcb_raw(&self) -> Option<u64> {
        u64::from_str_radix(&self.tcbm, 16).ok()
    }
}

impl Thim {
    /// Fetches the VCEK bundle of the host this VM runs on.
    pub fn vcek_bundle(&self) -> Result<ThimBundle, FetchError> {
        let url = format!(
            "{}/metadata/THIM/amd/certification",
            self.base.trim_end_matches('/')
        );
        let r = self.http.get_with_headers(&url, &[("Metadata", "true")])?;
        ThimBundle::parse(&r.body).map_err(|reason| FetchError::Json { url, reason })
    }
}
