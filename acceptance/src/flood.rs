//! A flooder for tests: while it runs, it holds many idle connections to every port a QEMU
//! node forwards to the host and sends bogus requests (garbage bytes, HTTP verification
//! requests) to them, the way an unauthenticated neighbour could. The node's limits must keep
//! legitimate work (attested handshakes, Init, joins) going meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Idle connections held per forwarded port: more than the node's listeners once had
/// handshake slots (32), fewer than its per-peer cap (every forwarded connection comes from
/// the same address inside the guest).
pub const IDLE_PER_PORT: usize = 40;

/// What a flood did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloodReport {
    /// The forwarded ports it found (`127.0.0.1:<port>`).
    pub ports: Vec<u16>,
    /// Idle connections opened.
    pub idle_connections: u64,
    /// Bogus requests sent (garbage or verification requests).
    pub bogus_requests: u64,
}

#[derive(Default)]
struct Counters {
    idle: AtomicU64,
    bogus: AtomicU64,
}

/// A running flood; [`Flooder::stop`] ends it.
pub struct Flooder {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    ports: Arc<std::sync::Mutex<Vec<u16>>>,
    threads: Vec<JoinHandle<()>>,
}

/// The host ports of `hostfwd=tcp:127.0.0.1:<port>-...` options in a QEMU command line.
pub fn forwarded_ports(cmdline: &str) -> Vec<u16> {
    let mut out: Vec<u16> = cmdline
        .split("hostfwd=tcp:127.0.0.1:")
        .skip(1)
        .filter_map(|rest| rest.split('-').next()?.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The forwarded ports of the running QEMU whose command line mentions `needle`.
fn find_ports(needle: &str) -> Vec<u16> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("qemu-system") && cmd.contains(needle) {
            let ports = forwarded_ports(&cmd);
            if !ports.is_empty() {
                return ports;
            }
        }
    }
    Vec::new()
}

impl Flooder {
    /// Waits (in the background) for a QEMU process whose command line mentions `needle`
    /// (e.g. a node's directory) and floods every port it forwards until stopped.
    pub fn start(needle: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let ports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, c, p, needle) = (
            stop.clone(),
            counters.clone(),
            ports.clone(),
            needle.to_owned(),
        );
        let discover = std::thread::spawn(move || {
            let found = loop {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let found = find_ports(&needle);
                if !found.is_empty() {
                    break found;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            *p.lock().unwrap_or_else(|e| e.into_inner()) = found.clone();
            let mut workers = Vec::new();
            for port in found {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let (s1, c1) = (s.clone(), c.clone());
                workers.push(std::thread::spawn(move || hold_idle(addr, &s1, &c1)));
                let (s2, c2) = (s.clone(), c.clone());
                workers.push(std::thread::spawn(move || send_bogus(addr, &s2, &c2)));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Self {
            stop,
            counters,
            ports,
            threads: vec![discover],
        }
    }

    /// Ends the flood and reports what it did.
    pub fn stop(mut self) -> FloodReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        FloodReport {
            ports: self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            idle_connections: self.counters.idle.load(Ordering::SeqCst),
            bogus_requests: self.counters.bogus.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Keeps [`IDLE_PER_PORT`] connections open that never send a byte, replacing them every few
/// seconds (before any server-side timeout could be what frees the slots).
fn hold_idle(addr: SocketAddr, stop: &AtomicBool, c: &Counters) {
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        held.clear();
        for _ in 0..IDLE_PER_PORT {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                c.idle.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        }
        for _ in 0..20 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sends bogus requests in a loop: a verification request over HTTP (served only on the
/// verification port, rate limited there) and a garbage ClientHello everywhere else.
fn send_bogus(addr: SocketAddr, stop: &AtomicBool, c: &Counters) {
    let requests: [&[u8]; 2] = [
        b"GET /?nonce=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-that-is-no-client-hello",
    ];
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        i = i.wrapping_add(1);
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(requests[i % requests.len()]).is_ok() {
            c.bogus.fetch_add(1, Ordering::SeqCst);
        }
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfwd_ports_are_parsed() {
        let cmd = "qemu-system-x86_64 -netdev user,id=n0,hostfwd=tcp:127.0.0.1:40001-10.0.2.15:9000,hostfwd=tcp:127.0.0.1:40002-10.0.2.15:9999 -name x";
        assert_eq!(forwarded_ports(cmd), vec![40001, 40002]);
        assert!(forwarded_ports("qemu-system-x86_64 -nographic").is_empty());
    }
}
