//! KDS/PCS fetch paths against a local HTTP server on 127.0.0.1 that serves ../shared/testdata
//! files, through the on-disk cache; the fetched certificates/collateral then verify real evidence.
#![allow(clippy::unwrap_used)]

mod common;
use common::{now, td, testdata_dir};
use constellation_attest::certs::Cert;
use constellation_attest::certs::fetch::{DiskCache, Kds, Pcs, PlainHttp};
use constellation_attest::policy::{SnpPolicy, TdxPolicy};
use constellation_attest::snp::{self, AmdRoots, ReportDataBinding, SnpReport, Tcb};
use constellation_attest::tdx::{self, TcbStatus, Times};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Serves testdata files by request path; stops (and joins) on Drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn route(path: &str) -> Option<(String, Vec<(String, String)>)> {
    let enc = |p: &str| -> String {
        std::fs::read(testdata_dir().join(p))
            .unwrap()
            .iter()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (*b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    if path.starts_with("/vcek/v1/Milan/cert_chain") {
        Some(("amd-roots/milan-ask-ark-chain.pem".into(), vec![]))
    } else if path.starts_with("/vcek/v1/Milan/") {
        Some(("snp/milan-vcek-trustee.der".into(), vec![]))
    } else if path == "/tdx/certification/v4/tcb?fmspc=90c06f000000" {
        Some((
            "tdx/go-tdx-guest-tcbinfo-fmspc90c06f-2026-02.json".into(),
            vec![(
                "TCB-Info-Issuer-Chain".into(),
                enc("intel-roots/intel-tcb-signing-chain.pem"),
            )],
        ))
    } else if path == "/tdx/certification/v4/qe/identity" {
        Some(("tdx/go-tdx-guest-qe-identity-2023-06.json".into(), vec![]))
    } else if path == "/sgx/certification/v4/rootcacrl" {
        Some((
            "tdx/go-tdx-guest-intel-root-ca-2023-04.crl.der".into(),
            vec![],
        ))
    } else if path.starts_with("/sgx/certification/v4/pckcrl") {
        Some((
            "tdx/go-tdx-guest-pck-platform-ca-2023-06.crl.der".into(),
            vec![],
        ))
    } else {
        None
    }
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s2, h2) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut line = String::new();
                let mut r = BufReader::new(c.try_clone().unwrap());
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
                        break;
                    }
                }
                h2.fetch_add(1, Ordering::SeqCst);
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                match route(&path) {
                    Some((file, headers)) => {
                        let body = std::fs::read(testdata_dir().join(file)).unwrap();
                        let mut head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", body.len());
                        for (n, v) in headers {
                            head.push_str(&format!("{n}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = c
                            .write_all(head.as_bytes())
                            .and_then(|_| c.write_all(&body));
                    }
                    None => {
                        let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            }
        });
        Server {
            port,
            stop,
            hits,
            thread: Some(thread),
        }
    }
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn kds_fetch_and_cache_then_verify() {
    let Some(report) = td("snp/milan-vcek-report-trustee.bin") else {
        return;
    };
    let srv = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let kds = Kds {
        base: srv.base(),
        http: Box::new(PlainHttp::default()),
        cache: DiskCache::new(cache_dir.path()),
    };
    let r = SnpReport::parse(&report).unwrap();
    let tcb = Tcb::from_raw(r.reported_tcb_raw(), false);
    let vcek = kds.vcek("Milan", &r.chip_id(), &tcb).unwrap();
    let chain = Cert::from_pem_bundle(&kds.cert_chain("Milan", "vcek").unwrap()).unwrap();
    let leaf = Cert::from_der(&vcek).unwrap();
    snp::verify_all(
        &report,
        &leaf,
        Some(&chain[0]),
        &AmdRoots::builtin(),
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::None,
    )
    .unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    // Served from the cache the second time.
    kds.vcek("Milan", &r.chip_id(), &tcb).unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    // Unknown path: a typed HTTP status error.
    assert!(kds.cert_chain("Bogus", "vcek").is_err());
}

#[test]
fn pcs_fetch_then_verify_tdx_quote() {
    let Some(quote) = td("tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat") else {
        return;
    };
    let srv = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let pcs = Pcs {
        base: srv.base(),
        http: Box::new(PlainHttp::default()),
        cache: DiskCache::new(cache_dir.path()),
    };
    let files = pcs.tdx_collateral(&[0x90, 0xc0, 0x6f, 0, 0, 0]).unwrap();
    let v = tdx::verify_quote(
        &quote,
        Some(&files),
        &TdxPolicy::default(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap();
    assert_eq!(v.tcb_status, Some(TcbStatus::UpToDate));
}

/// https:// is served by the built-in client now (tests/https_fetch.rs, on a loopback server);
/// other schemes are still refused without touching the network.
#[test]
fn only_http_and_https_schemes() {
    let http = PlainHttp::default();
    use constellation_attest::certs::fetch::HttpGet;
    assert!(matches!(
        http.get("ftp://kdsintf.amd.com/vcek/v1/Milan/cert_chain"),
        Err(constellation_attest::certs::fetch::FetchError::Scheme { .. })
    ));
}
