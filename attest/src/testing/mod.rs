//! Test support (feature `test-support`): a swtpm process per test.
//!
//! Each [`Swtpm`] has its own state directory and its own pair of loopback ports, so tests run
//! in parallel; the process is killed and the directory removed on drop (also when a test
//! panics).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};

use constellation_vmm::VmmError;
use constellation_vmm::swtpm::{self, Manufacture};
use std::time::{Duration, Instant};

/// A running `swtpm socket --tpm2` on 127.0.0.1.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// How long swtpm may take to listen (generous: the machine may be loaded).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Swtpm {
    /// Starts a fresh, already started-up (`TPM2_Startup(CLEAR)`) TPM.
    pub fn start() -> io::Result<Self> {
        Self::start_inner(false)
    }

    /// Like [`Swtpm::start`], but first provisions EK certificates with
    /// `swtpm_setup --create-ek-cert --create-platform-cert`.
    pub fn start_with_ek_cert() -> io::Result<Self> {
        Self::start_inner(true)
    }

    /// A qemu-vtpm TPM as the provider provisions it: AK template and the AK certificate
    /// issued by `ca` in NV ([`crate::qemu_vtpm::AK_TEMPLATE_NV_INDEX`],
    /// [`crate::qemu_vtpm::AK_CERT_NV_INDEX`]), then started like [`Swtpm::start`].
    pub fn start_qemu_vtpm(ca: &crate::qemu_vtpm::AkCa) -> io::Result<Self> {
        Self::start_with(|dir| {
            swtpm::provision_ak(dir, |ak: &[u8]| ca.certify(ak))
                .map(drop)
                .map_err(|e| io::Error::other(e.to_string()))
        })
    }

    fn start_inner(ek_cert: bool) -> io::Result<Self> {
        Self::start_with(|dir| if ek_cert { setup_ek(dir) } else { Ok(()) })
    }

    fn start_with(prepare: impl Fn(&Path) -> io::Result<()>) -> io::Result<Self> {
        let mut last_err = None;
        for _ in 0..10 {
            let dir = tempfile::Builder::new().prefix("swtpm-").tempdir()?;
            prepare(dir.path())?;
            let port = free_port_pair()?;
            match spawn(dir.path(), port) {
                Ok(child) => match wait_ready(child, port) {
                    Ok(child) => return Ok(Self { child, port, dir }),
                    Err(e) => last_err = Some(e),
                },
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }

    /// TCTI string for tss-esapi: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM command port (the control port is `port() + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TPM state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup_ek(dir: &Path) -> io::Result<()> {
    swtpm::manufacture(
        dir,
        Manufacture {
            ek_certificates: true,
        },
    )
    .map_err(|e| {
        let kind = match &e {
            VmmError::MissingProgram { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{e}; see scripts/install-deps.sh"))
    })
}

/// Two consecutive free loopback ports (server, ctrl). The OS may hand them out again before
/// swtpm binds; the caller retries then.
fn free_port_pair() -> io::Result<u16> {
    for _ in 0..100 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let p = a.local_addr()?.port();
        if p == u16::MAX {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(io::Error::other("no two consecutive free loopback ports"))
}

fn spawn(dir: &Path, port: u16) -> io::Result<Child> {
    let log = std::fs::File::create(dir.join("swtpm.log"))?;
    swtpm::Swtpm::on_tcp(dir, port)
        .command()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    "swtpm not found on PATH; install swtpm and swtpm-tools \
                     (scripts/install-deps.sh)",
                )
            } else {
                e
            }
        })
}

/// Waits until the control port accepts (probing the control channel leaves the single TPM
/// command connection free for the test).
fn wait_ready(mut child: Child, port: u16) -> io::Result<Child> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let ctrl = SocketAddr::from((Ipv4Addr::LOCALHOST, port + 1));
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "swtpm exited early ({status}); port {port} probably taken"
            )));
        }
        if TcpStream::connect_timeout(&ctrl, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "swtpm did not listen within 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Provisioning a swtpm like a cloud vTPM (feature `tpm` as well): NV indices and a persistent
/// attestation key, as the Azure host and the GCE hypervisor do before the VM boots.
#[cfg(feature = "tpm")]
mod provision {
    use tss_esapi::Context;
    use tss_esapi::attributes::{NvIndexAttributesBuilder, ObjectAttributesBuilder};
    use tss_esapi::handles::{NvIndexTpmHandle, ObjectHandle, PersistentTpmHandle};
    use tss_esapi::interface_types::algorithm::{
        HashingAlgorithm, PublicAlgorithm, RsaSchemeAlgorithm,
    };
    use tss_esapi::interface_types::dynamic_handles::Persistent;
    use tss_esapi::interface_types::key_bits::RsaKeyBits;
    use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::{
        MaxNvBuffer, NvPublicBuilder, Public, PublicBuilder, PublicKeyRsa,
        PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    };
    use tss_esapi::traits::Marshall;

    use super::Swtpm;

    fn e(what: &str) -> impl FnOnce(tss_esapi::Error) -> String + '_ {
        move |err| format!("{what}: {err}")
    }

    /// An RSA-2048 restricted signing key template (RSASSA/SHA-256). `unique` makes the primary
    /// key differ from any the issuer would derive itself from its own template.
    pub fn rsa_ak_template(unique: &[u8]) -> Result<Public, String> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_sign_encrypt(true)
            .build()
            .map_err(e("attributes"))?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new()
                    .with_scheme(
                        RsaScheme::create(
                            RsaSchemeAlgorithm::RsaSsa,
                            Some(HashingAlgorithm::Sha256),
                        )
                        .map_err(e("scheme"))?,
                    )
                    .with_key_bits(RsaKeyBits::Rsa2048)
                    .with_exponent(RsaExponent::default())
                    .with_is_signing_key(true)
                    .with_restricted(true)
                    .build()
                    .map_err(e("RSA parameters"))?,
            )
            .with_rsa_unique_identifier(
                PublicKeyRsa::try_from(unique.to_vec()).map_err(e("unique"))?,
            )
            .build()
            .map_err(e("template"))
    }

    /// [`rsa_ak_template`] marshalled as the `TPMT_PUBLIC` GCE stores in NV 0x01c10001.
    pub fn rsa_ak_template_bytes(unique: &[u8]) -> Result<Vec<u8>, String> {
        rsa_ak_template(unique)?.marshall().map_err(e("marshal"))
    }

    impl Swtpm {
        /// The `TPM2B_PUBLIC` of the endorsement-hierarchy primary key created from `template`
        /// (a marshalled `TPMT_PUBLIC`), derived independently of the issuer, as the GCE
        /// hypervisor does before certifying it.
        pub fn endorsement_primary_public(&self, template: &[u8]) -> Result<Vec<u8>, String> {
            use tss_esapi::traits::UnMarshall;
            let mut ctx = self.context()?;
            let t = Public::unmarshall(template).map_err(e("template"))?;
            let created = ctx
                .create_primary(Hierarchy::Endorsement, t, None, None, None, None)
                .map_err(e("CreatePrimary"))?;
            ctx.flush_context(created.key_handle.into())
                .map_err(e("FlushContext"))?;
            tpm2b(&created.out_public)
        }

        fn context(&self) -> Result<Context, String> {
            let mut ctx =
                Context::new(self.tcti().parse().map_err(e("TCTI"))?).map_err(e("connect"))?;
            ctx.set_sessions((Some(AuthSession::Password), None, None));
            Ok(ctx)
        }

        /// Defines NV `index` (owner read/write, exactly `data.len()` bytes) and writes `data`.
        pub fn define_nv(&self, index: u32, data: &[u8]) -> Result<(), String> {
            let mut ctx = self.context()?;
            let idx = NvIndexTpmHandle::new(index).map_err(e("NV index"))?;
            let attrs = NvIndexAttributesBuilder::new()
                .with_owner_write(true)
                .with_owner_read(true)
                .build()
                .map_err(e("NV attributes"))?;
            let public = NvPublicBuilder::new()
                .with_nv_index(idx)
                .with_index_name_algorithm(HashingAlgorithm::Sha256)
                .with_index_attributes(attrs)
                .with_data_area_size(data.len())
                .build()
                .map_err(e("NV public"))?;
            let h = ctx
                .nv_define_space(Provision::Owner, None, public)
                .map_err(e("NV_DefineSpace"))?;
            for (i, chunk) in data.chunks(512).enumerate() {
                let offset = u16::try_from(i * 512).map_err(|_| "NV data too long".to_string())?;
                ctx.nv_write(
                    NvAuth::Owner,
                    h,
                    MaxNvBuffer::try_from(chunk.to_vec()).map_err(e("NV buffer"))?,
                    offset,
                )
                .map_err(e("NV_Write"))?;
            }
            Ok(())
        }

        /// Creates an RSA attestation key (owner hierarchy, `unique` as in
        /// [`rsa_ak_template`]) and makes it persistent at `handle`, as the Azure vTPM does at
        /// 0x81000003. Returns its `TPM2B_PUBLIC`.
        pub fn persist_rsa_ak(&self, handle: u32, unique: &[u8]) -> Result<Vec<u8>, String> {
            let mut ctx = self.context()?;
            let created = ctx
                .create_primary(
                    Hierarchy::Owner,
                    rsa_ak_template(unique)?,
                    None,
                    None,
                    None,
                    None,
                )
                .map_err(e("CreatePrimary"))?;
            let persistent =
                Persistent::Persistent(PersistentTpmHandle::new(handle).map_err(e("handle"))?);
            ctx.evict_control(
                Provision::Owner,
                ObjectHandle::from(created.key_handle),
                persistent,
            )
            .map_err(e("EvictControl"))?;
            ctx.flush_context(created.key_handle.into())
                .map_err(e("FlushContext"))?;
            tpm2b(&created.out_public)
        }
    }

    fn tpm2b(public: &Public) -> Result<Vec<u8>, String> {
        let tpmt = public.marshall().map_err(e("marshal"))?;
        let len = u16::try_from(tpmt.len()).map_err(|_| "TPMT_PUBLIC too long".to_string())?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend(tpmt);
        Ok(out)
    }
}

#[cfg(feature = "tpm")]
pub use provision::{rsa_ak_template, rsa_ak_template_bytes};
