//! In-guest test program for the state disk and WireGuard (run by node/tests/guest_*.rs and
//! node/benches/guest_disk.rs inside a throw-away QEMU guest).
//!
//! It formats block devices and reconfigures networking, so it refuses to run unless
//! `CONSTELLATION_GUEST_TESTS=1` is set, which only the guest harness does. Every check prints
//! `GUEST-CHECK <name> ok` or fails the program with a message; the host side asserts on the
//! exit code and on the `GUEST-*` lines.

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    if std::env::var("CONSTELLATION_GUEST_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "guest-tests: refusing to run: this program formats block devices and changes \
             network links; it runs only inside the QEMU test guest (CONSTELLATION_GUEST_TESTS=1)"
        );
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow::anyhow!("missing argument {i}; see guest-tests.rs"))
    };
    match arg(0)? {
        "disk-init" => guest::disk_init(arg(1)?, arg(2)?, arg(3)?, arg(4)?),
        "disk-reboot" => guest::disk_reboot(arg(1)?, arg(2)?, arg(3)?, arg(4)?, arg(5)?),
        "disk-tamper" => guest::disk_tamper(arg(1)?, arg(2)?, arg(3)?, arg(4)?),
        "wg" => guest::wg(&args[1..]),
        "bench-disk" => guest::bench_disk(arg(1)?, arg(2)?.parse()?),
        other => anyhow::bail!("unknown subcommand {other:?}"),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("guest-tests: Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod guest {
    use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
    use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::{Context, anyhow, bail, ensure};
    use constellation_node::disk::{
        BootState, DiskError, DiskKey, LuksOptions, LuksStateDisk, StateDisk,
    };
    use constellation_node::netcrypt::{
        IpCidr, NetworkConfig, NetworkEncryption, PeerConfig, WgKeyPair, WgPublicKey,
        WireGuardNetwork, delete_link,
    };
    use zeroize::Zeroizing;

    /// The file written before the "reboot" and read back after it.
    const STATE_FILE: &str = "guest-test-state.txt";

    const JOIN_ENDPOINTS: [&str; 2] = ["10.0.0.2:30090", "10.0.0.3:30090"];

    fn check(name: &str) {
        println!("GUEST-CHECK {name} ok");
    }

    fn opts(mount: &str) -> LuksOptions {
        LuksOptions {
            mount_point: PathBuf::from(mount),
            mkfs_program: PathBuf::from("/sbin/mkfs.ext4"),
            // Small argon2id cost: the guest has little RAM and runs under TCG.
            pbkdf_memory_kib: 32 * 1024,
            ..LuksOptions::default()
        }
    }

    /// Derives the disk key like the key service: HKDF-SHA256(master, salt, "key-" + uuid).
    fn derive(master_hex: &str, salt_hex: &str, uuid: &str) -> anyhow::Result<DiskKey> {
        let master = Zeroizing::new(hex::decode(master_hex).context("master secret hex")?);
        let salt = hex::decode(salt_hex).context("salt hex")?;
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &master);
        let mut out = Zeroizing::new(vec![0u8; 32]);
        hk.expand(format!("key-{uuid}").as_bytes(), &mut out)
            .map_err(|e| anyhow!("hkdf expand: {e}"))?;
        Ok(DiskKey::new(out.to_vec()))
    }

    fn marker(uuid: &str) -> String {
        format!("constellation state written before reboot for {uuid}\n")
    }

    pub fn disk_init(dev: &str, master: &str, salt: &str, mount: &str) -> anyhow::Result<()> {
        let disk = LuksStateDisk::new(dev, opts(mount));
        ensure!(
            !disk.is_initialized()?,
            "blank disk reported as initialised"
        );
        let t = Instant::now();
        let state = disk.prepare().context("prepare (format) blank disk")?;
        ensure!(
            state == BootState::Fresh,
            "blank disk: prepare gave {state:?}"
        );
        println!("GUEST-INFO format+wipe+mkfs took {:?}", t.elapsed());
        let info = disk.header_info()?;
        println!("GUEST-INFO header after format: {info:?}");
        ensure!(
            info.cipher == "aes" && info.cipher_mode == "xts-plain64",
            "cipher {info:?}"
        );
        ensure!(info.sector_size == 4096, "sector size {}", info.sector_size);
        ensure!(
            info.integrity.as_deref() == Some("hmac(sha256)"),
            "integrity {:?}",
            info.integrity
        );
        ensure!(
            info.volume_key_bytes == 96,
            "volume key {} bytes, want 64 (xts) + 32 (hmac)",
            info.volume_key_bytes
        );
        ensure!(
            info.active_keyslots.len() == 1,
            "key slots {:?}",
            info.active_keyslots
        );
        ensure!(
            info.keyslot_kdfs == ["argon2id"],
            "kdfs {:?}",
            info.keyslot_kdfs
        );
        ensure!(
            !info.initialized,
            "token says initialised right after format"
        );
        check("luks2-format");
        let boot_slot = info.active_keyslots[0];

        ensure!(
            disk.prepare()? == BootState::Fresh,
            "second prepare must keep the fresh disk"
        );
        check("prepare-idempotent");

        let uuid = disk.uuid()?;
        ensure!(
            uuid.len() == 36 && uuid == uuid.to_ascii_lowercase(),
            "uuid {uuid:?}"
        );
        println!("GUEST-UUID={uuid}");
        let key = derive(master, salt, &uuid)?;

        let dir = disk.mount().context("mount fresh disk")?;
        let mut f = std::fs::File::create(dir.join(STATE_FILE))?;
        f.write_all(marker(&uuid).as_bytes())?;
        f.sync_all()?;
        drop(f);
        check("mount-write");

        // Remembered join endpoints live in their own LUKS2 token, next to the
        // initialisation token; rekeying must keep them.
        ensure!(
            disk.remembered_join_endpoints()?.is_empty(),
            "a fresh disk remembers endpoints"
        );
        disk.remember_join_endpoints(&["10.0.0.9:30090".to_string()])?;
        disk.remember_join_endpoints(&JOIN_ENDPOINTS.map(String::from))?;
        check("endpoints-token-written");

        disk.rekey(&key).context("rekey")?;
        let info = disk.header_info()?;
        println!("GUEST-INFO header after rekey: {info:?}");
        ensure!(info.initialized, "token not set after rekey");
        ensure!(
            info.active_keyslots.len() == 1,
            "key slots after rekey {:?}",
            info.active_keyslots
        );
        ensure!(
            !info.active_keyslots.contains(&boot_slot),
            "boot key slot {boot_slot} survived rekey"
        );
        ensure!(
            info.keyslot_kdfs == ["argon2id"],
            "kdfs {:?}",
            info.keyslot_kdfs
        );
        ensure!(disk.is_initialized()?, "is_initialized false after rekey");
        check("rekey");

        match disk.rekey(&key) {
            Err(DiskError::InvalidState { .. }) => check("second-rekey-refused"),
            other => bail!("second rekey: {other:?}"),
        }
        disk.unlock(&key)
            .context("verify derived key on the open disk")?;
        let wrong = derive(master, "00", &uuid)?;
        match disk.unlock(&wrong) {
            Err(DiskError::WrongKey { .. }) => check("wrong-key-refused-while-open"),
            other => bail!("wrong key on open disk: {other:?}"),
        }
        disk.close()?;
        disk.close()?;
        check("close");
        Ok(())
    }

    pub fn disk_reboot(
        dev: &str,
        master: &str,
        salt: &str,
        mount: &str,
        expected_uuid: &str,
    ) -> anyhow::Result<()> {
        let disk = LuksStateDisk::new(dev, opts(mount));
        ensure!(disk.is_initialized()?, "disk not initialised after reboot");
        let state = disk.prepare()?;
        ensure!(
            state == BootState::Locked,
            "initialised disk: prepare gave {state:?}"
        );
        check("locked-after-reboot");
        let remembered = disk.remembered_join_endpoints()?;
        ensure!(
            remembered == JOIN_ENDPOINTS,
            "remembered endpoints while locked: {remembered:?}"
        );
        check("endpoints-readable-while-locked");
        let uuid = disk.uuid()?;
        ensure!(
            uuid == expected_uuid,
            "uuid changed: {uuid} vs {expected_uuid}"
        );
        check("uuid-stable");
        ensure!(disk.mount().is_err(), "a locked disk mounted");

        let other_master = "ff".repeat(32);
        let wrong = derive(&other_master, salt, &uuid)?;
        match disk.unlock(&wrong) {
            Err(DiskError::WrongKey { uuid: u, .. }) => {
                ensure!(u == uuid, "WrongKey names uuid {u}");
                check("wrong-key-refused");
            }
            other => bail!("wrong key: {other:?}"),
        }
        ensure!(disk.mount().is_err(), "disk mounted after a failed unlock");

        let key = derive(master, salt, &uuid)?;
        disk.unlock(&key).context("unlock with the derived key")?;
        check("unlock-derived-key");
        let dir = disk.mount()?;
        let got = std::fs::read_to_string(dir.join(STATE_FILE)).context("read state file")?;
        ensure!(got == marker(&uuid), "state file content {got:?}");
        check("data-survived-reboot");
        let info = disk.header_info()?;
        ensure!(info.integrity.as_deref() == Some("hmac(sha256)"));
        disk.close()?;
        Ok(())
    }

    /// Size of one LUKS2 metadata copy (binary header + JSON area) as the agent formats it.
    const METADATA_COPY: usize = 16 * 1024;

    /// Rewrites the LUKS2 JSON metadata of both header copies on `dev` with `edit`, fixing
    /// each copy's SHA-256 checksum, as someone who controls the disk can. Returns the JSON.
    fn rewrite_luks2_json(
        dev: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> anyhow::Result<serde_json::Value> {
        use sha2::Digest as _;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)?;
        let mut hdr = vec![0u8; 2 * METADATA_COPY];
        f.read_exact(&mut hdr)?;
        let hdr_size = usize::try_from(u64::from_be_bytes(hdr[8..16].try_into()?))?;
        ensure!(hdr_size == METADATA_COPY, "header size {hdr_size}");
        let json_area = &hdr[4096..hdr_size];
        let end = json_area
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(json_area.len());
        let mut meta: serde_json::Value = serde_json::from_slice(&json_area[..end])?;
        edit(&mut meta);
        let new = serde_json::to_vec(&meta)?;
        ensure!(new.len() < hdr_size - 4096, "rewritten JSON too long");
        for off in [0, hdr_size] {
            let copy = &mut hdr[off..off + hdr_size];
            copy[4096..].fill(0);
            copy[4096..4096 + new.len()].copy_from_slice(&new);
            // The checksum covers the whole copy with the checksum field zeroed.
            copy[448..512].fill(0);
            let sum = sha2::Sha256::digest(&*copy);
            copy[448..480].copy_from_slice(&sum);
        }
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&hdr)?;
        f.sync_all()?;
        Ok(meta)
    }

    /// The LUKS anti-forensic split of `key` (sha256 diffusion) with all stripes but the last
    /// zero: what a keyslot area holds in plaintext when its cipher is `cipher_null`.
    fn af_split_zero(key: &[u8], stripes: usize) -> Vec<u8> {
        use sha2::Digest as _;
        let diffuse = |b: &[u8]| -> Vec<u8> {
            b.chunks(32)
                .enumerate()
                .flat_map(|(i, c)| {
                    let mut h = sha2::Sha256::new();
                    h.update((i as u32).to_be_bytes());
                    h.update(c);
                    h.finalize()[..c.len()].to_vec()
                })
                .collect()
        };
        let mut buf = vec![0u8; key.len()];
        for _ in 0..stripes - 1 {
            buf = diffuse(&buf);
        }
        let mut out = vec![0u8; key.len() * (stripes - 1)];
        out.extend(key.iter().zip(&buf).map(|(k, b)| k ^ b));
        out
    }

    fn mapping_exists(name: &str) -> bool {
        Path::new("/dev/mapper").join(name).exists()
    }

    /// Expects both keys to be refused with a header-policy error naming `field`, and no
    /// mapping afterwards.
    fn expect_policy_refusal(
        disk: &LuksStateDisk,
        keys: [(&str, &DiskKey); 2],
        fields: &[&str],
    ) -> anyhow::Result<()> {
        for (which, key) in keys {
            match disk.unlock(key) {
                Err(e @ DiskError::HeaderPolicy { .. }) => {
                    let msg = e.to_string();
                    println!("GUEST-INFO {which} key: {msg}");
                    ensure!(
                        fields.iter().any(|f| msg.contains(f)),
                        "{which} key: error names none of {fields:?}: {msg}"
                    );
                    ensure!(msg.contains("header was altered"), "{which} key: {msg}");
                }
                other => bail!("{which} key on an altered header: {other:?}"),
            }
            ensure!(
                !mapping_exists("state"),
                "/dev/mapper/state exists after the {which} key was refused"
            );
            ensure!(disk.mount().is_err(), "mounted after a refused unlock");
        }
        Ok(())
    }

    /// Formats and re-keys, then rewrites the header as the host could (a `cipher_null`
    /// keyslot holding the volume key in plaintext; separately, a segment without integrity):
    /// both the right and a wrong key must be refused by the header policy, with no mapping.
    /// Restoring the genuine header must unlock again.
    pub fn disk_tamper(dev: &str, master: &str, salt: &str, mount: &str) -> anyhow::Result<()> {
        let disk = LuksStateDisk::new(dev, opts(mount));
        ensure!(disk.prepare()? == BootState::Fresh, "blank disk not fresh");
        let uuid = disk.uuid()?;
        let key = derive(master, salt, &uuid)?;
        let wrong = derive(&"ff".repeat(32), salt, &uuid)?;
        disk.rekey(&key).context("rekey")?;
        disk.close()?;
        ensure!(!mapping_exists("state"), "mapping left after close");
        check("tamper-setup");

        let mut genuine = vec![0u8; 16 * 1024 * 1024];
        std::fs::File::open(dev)?.read_exact(&mut genuine)?;
        let restore = || -> anyhow::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
            f.write_all(&genuine)?;
            f.sync_all()?;
            Ok(())
        };

        // The genuine volume key, as an attacker's own header would carry a key it knows.
        let mut vk = Zeroizing::new(vec![0u8; 96]);
        {
            let mut cd = libcryptsetup_rs::CryptInit::init(Path::new(dev))?;
            cd.context_handle().load::<()>(
                Some(libcryptsetup_rs::consts::vals::EncryptionFormat::Luks2),
                None,
            )?;
            let (_, n) = cd
                .volume_key_handle()
                .get(None, &mut vk, Some(key.expose()))?;
            ensure!(n == 96, "volume key of {n} bytes");
        }
        let meta = rewrite_luks2_json(dev, |m| {
            if let Some(slots) = m.get_mut("keyslots").and_then(|k| k.as_object_mut()) {
                for slot in slots.values_mut() {
                    slot["area"]["encryption"] = "cipher_null-ecb".into();
                }
            }
        })?;
        let (slot_id, area_offset) = meta["keyslots"]
            .as_object()
            .and_then(|s| s.iter().next())
            .and_then(|(id, s)| {
                Some((
                    id.clone(),
                    s["area"]["offset"].as_str()?.parse::<u64>().ok()?,
                ))
            })
            .ok_or_else(|| anyhow!("no keyslot in {meta}"))?;
        {
            let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
            f.seek(SeekFrom::Start(area_offset))?;
            f.write_all(&af_split_zero(&vk, 4000))?;
            f.sync_all()?;
        }
        // Without the policy, libcryptsetup itself would now accept any passphrase.
        {
            let mut cd = libcryptsetup_rs::CryptInit::init(Path::new(dev))?;
            cd.context_handle().load::<()>(
                Some(libcryptsetup_rs::consts::vals::EncryptionFormat::Luks2),
                None,
            )?;
            let res = cd.activate_handle().activate_by_passphrase(
                None,
                None,
                wrong.expose(),
                libcryptsetup_rs::consts::flags::CryptActivate::empty(),
            );
            println!(
                "GUEST-INFO libcryptsetup without the header policy, wrong key on the cipher_null \
                 keyslot {slot_id}: {res:?}"
            );
        }
        expect_policy_refusal(
            &disk,
            [("wrong", &wrong), ("right", &key)],
            &[&format!("keyslots.{slot_id}.area.encryption")],
        )?;
        check("null-cipher-keyslot-refused");

        restore()?;
        rewrite_luks2_json(dev, |m| {
            if let Some(seg) = m["segments"]["0"].as_object_mut() {
                seg.remove("integrity");
            }
        })?;
        expect_policy_refusal(
            &disk,
            [("wrong", &wrong), ("right", &key)],
            // The policy names the field; should libcryptsetup already refuse to load the
            // header, the refusal names the header as a whole.
            &[
                "segments.0.integrity",
                "header: libcryptsetup does not load it",
            ],
        )?;
        check("segment-without-integrity-refused");

        restore()?;
        disk.unlock(&key)
            .context("unlock the restored genuine header")?;
        ensure!(
            mapping_exists("state"),
            "no mapping after unlocking the genuine header"
        );
        disk.mount()?;
        disk.close()?;
        check("genuine-header-unlocks");
        Ok(())
    }

    /// `wg <ifname> <own-private-hex> <own-tunnel-cidr> <port> <peer-pub-b64> <peer-endpoint>
    ///  <peer-tunnel-ip> <server|client> <marker> <canary-target>`
    pub fn wg(a: &[String]) -> anyhow::Result<()> {
        ensure!(a.len() == 10, "wg needs 10 arguments, got {}", a.len());
        let ifname = a[0].as_str();
        let private: [u8; 32] = hex::decode(&a[1])?
            .try_into()
            .map_err(|_| anyhow!("private key must be 32 bytes"))?;
        let keys = WgKeyPair::from_private(Zeroizing::new(private));
        let address: IpCidr = a[2].parse()?;
        let port: u16 = a[3].parse()?;
        let peer_key: WgPublicKey = a[4].parse()?;
        let peer_endpoint: SocketAddr = a[5].parse()?;
        let peer_ip: IpAddr = a[6].parse()?;
        let role = a[7].as_str();
        let marker = a[8].as_str();
        let canary_target: SocketAddr = a[9].parse()?;

        let net = WireGuardNetwork::new(keys);
        let peer = PeerConfig {
            public_key: peer_key,
            endpoint: Some(peer_endpoint),
            allowed_ips: vec![IpCidr::host(peer_ip)],
            persistent_keepalive: Some(5),
        };
        let config = NetworkConfig {
            interface: ifname.into(),
            listen_port: port,
            address,
            peers: vec![peer.clone()],
        };
        net.apply(&config).context("first apply")?;
        ensure!(
            net.kernel_peers(ifname)? == vec![peer_key],
            "kernel peers after apply"
        );
        ensure!(net.kernel_listen_port(ifname)? == port, "listen port");
        net.apply(&config).context("second apply")?;
        ensure!(
            net.kernel_peers(ifname)? == vec![peer_key],
            "kernel peers after re-apply"
        );
        check("wg-apply-idempotent");

        let extra = WgKeyPair::generate().public_key();
        let mut more = config.clone();
        more.peers.push(PeerConfig {
            public_key: extra,
            endpoint: None,
            allowed_ips: vec!["10.99.0.200/32".parse()?],
            persistent_keepalive: None,
        });
        net.apply(&more)?;
        let mut want = vec![peer_key, extra];
        want.sort();
        ensure!(net.kernel_peers(ifname)? == want, "peer not added");
        net.apply(&config)?;
        ensure!(
            net.kernel_peers(ifname)? == vec![peer_key],
            "peer not removed"
        );
        check("wg-peer-add-remove");

        // A plaintext canary straight over the private network (not the tunnel): the host test
        // finds it in the capture, proving the capture would show plaintext if it leaked.
        let canary = UdpSocket::bind("0.0.0.0:0")?;
        canary.send_to(format!("PLAINTEXT-CANARY-{role}").as_bytes(), canary_target)?;

        let deadline = Instant::now() + Duration::from_secs(240);
        match role {
            "server" => {
                let listener = TcpListener::bind(SocketAddr::new(address.addr, 7777))?;
                listener.set_nonblocking(true)?;
                let (stream, from) = loop {
                    match listener.accept() {
                        Ok(s) => break s,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            ensure!(
                                Instant::now() < deadline,
                                "no client connected through the tunnel"
                            );
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                ensure!(
                    from.ip() == peer_ip,
                    "connection from {from}, expected tunnel peer {peer_ip}"
                );
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(120)))?;
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line)?;
                ensure!(line.trim_end() == marker, "received {line:?}");
                (&stream).write_all(format!("ACK {marker}\n").as_bytes())?;
                (&stream).flush()?;
                // Wait for the client to close, so the reply is delivered before we power off.
                let mut rest = Vec::new();
                let _ = (&stream).read_to_end(&mut rest);
                check("wg-server-received-marker");
            }
            "client" => {
                let target = SocketAddr::new(peer_ip, 7777);
                let stream = loop {
                    match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                        Ok(s) => break s,
                        Err(e) => {
                            ensure!(
                                Instant::now() < deadline,
                                "connect to {target} through the tunnel: {e}"
                            );
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                };
                stream.set_read_timeout(Some(Duration::from_secs(120)))?;
                (&stream).write_all(format!("{marker}\n").as_bytes())?;
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line)?;
                ensure!(line.trim_end() == format!("ACK {marker}"), "reply {line:?}");
                check("wg-client-got-reply");
            }
            other => bail!("role {other:?}"),
        }
        net.teardown()?;
        ensure!(
            net.kernel_peers(ifname).is_err(),
            "interface still present after teardown"
        );
        delete_link(ifname).context("deleting a missing link must succeed")?;
        check("wg-teardown");
        Ok(())
    }

    fn drop_caches() -> anyhow::Result<()> {
        std::fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches")
    }

    /// Sequential write then read of `bytes` on `dev`, 1 MiB blocks; returns MiB/s.
    fn throughput(dev: &Path, bytes: u64) -> anyhow::Result<(f64, f64)> {
        const BLOCK: usize = 1 << 20;
        let block: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
        let blocks = bytes / BLOCK as u64;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)?;
        drop_caches()?;
        let t = Instant::now();
        for _ in 0..blocks {
            f.write_all(&block)?;
        }
        f.sync_all()?;
        let write = t.elapsed();
        drop_caches()?;
        f.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; BLOCK];
        let t = Instant::now();
        for _ in 0..blocks {
            f.read_exact(&mut buf)?;
        }
        let read = t.elapsed();
        ensure!(
            buf == block,
            "read back different data from {}",
            dev.display()
        );
        let mib = (blocks * BLOCK as u64) as f64 / (1 << 20) as f64;
        Ok((mib / write.as_secs_f64(), mib / read.as_secs_f64()))
    }

    /// `cpu_aes=<flag present> xts_aes=<driver>@<priority>,...` from /proc/cpuinfo and
    /// /proc/crypto (the kernel uses the highest-priority driver).
    fn crypto_info() -> String {
        let cpu_aes = std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| {
                c.lines()
                    .find(|l| l.starts_with("flags"))
                    .is_some_and(|l| l.split_whitespace().any(|f| f == "aes"))
            })
            .unwrap_or(false);
        let crypto = std::fs::read_to_string("/proc/crypto").unwrap_or_default();
        let mut xts = Vec::new();
        for block in crypto.split("\n\n") {
            let field = |k: &str| {
                block.lines().find_map(|l| {
                    let (key, v) = l.split_once(':')?;
                    (key.trim() == k).then(|| v.trim().to_string())
                })
            };
            if field("name").as_deref() == Some("xts(aes)") {
                xts.push(format!(
                    "{}@{}",
                    field("driver").unwrap_or_default(),
                    field("priority").unwrap_or_default()
                ));
            }
        }
        format!("cpu_aes={cpu_aes} xts_aes={}", xts.join(","))
    }

    fn device_size(dev: &Path) -> anyhow::Result<u64> {
        let mut f = std::fs::File::open(dev)?;
        Ok(f.seek(SeekFrom::End(0))?)
    }

    pub fn bench_disk(dev: &str, mib: u64) -> anyhow::Result<()> {
        let dev = Path::new(dev);
        let want = mib << 20;
        let (w, r) = throughput(dev, want.min(device_size(dev)?))?;
        println!("GUEST-BENCH raw write_mib_s={w:.1} read_mib_s={r:.1}");
        for (name, integrity) in [("luks", false), ("luks-integrity", true)] {
            let disk = LuksStateDisk::new(
                dev,
                LuksOptions {
                    integrity,
                    ..opts("/mnt/bench")
                },
            );
            // A fresh format every time (a raw write just destroyed any header).
            ensure!(disk.prepare()? == BootState::Fresh);
            let mapped = disk.mapper_path();
            if !integrity {
                // Why the crypt rows cost what they cost: which xts(aes) the kernel picked
                // and whether the (emulated) CPU offers AES-NI.
                println!("GUEST-BENCH-INFO {}", crypto_info());
            }
            let size = device_size(&mapped)?;
            let (w, r) = throughput(&mapped, want.min(size))?;
            println!(
                "GUEST-BENCH {name} write_mib_s={w:.1} read_mib_s={r:.1} mapped_mib={}",
                size >> 20
            );
            disk.close()?;
            // Destroy the header so the next round formats again.
            let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
            f.write_all(&vec![0u8; 16 << 20])?;
            f.sync_all()?;
        }
        Ok(())
    }
}
