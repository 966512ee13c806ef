//! The few TPM 2.0 commands the host sends to a freshly manufactured swtpm to give a qemu-vtpm
//! node an attestation-key root, the way cloud vTPMs are provisioned before a VM boots
//! (GCE stores an AK template and the AK certificate in NV):
//!
//! 1. the AK template ([`ak_template`], a `TPMT_PUBLIC`) goes into NV [`AK_TEMPLATE_NV_INDEX`];
//! 2. `TPM2_CreatePrimary` in the endorsement hierarchy derives the AK from the TPM's seed — the
//!    node's agent later derives the same key from the same template;
//! 3. the caller certifies that public key (the cluster's AK CA) and the certificate goes into
//!    NV [`AK_CERT_NV_INDEX`], where the agent reads it into its attestation documents.
//!
//! Hand-written marshalling, because this crate must not link the TSS libraries (the provider
//! uses it) and the five commands needed — CreatePrimary, FlushContext, NV_DefineSpace,
//! NV_Write, Shutdown — each have a fixed shape with password authorisation only; a general
//! TPM library would add far more surface than these encoders. Responses are parsed with
//! checked reads only.

use std::io::{Read, Write};

/// NV index of the AK template (a `TPMT_PUBLIC`), in the owner-defined range.
pub const AK_TEMPLATE_NV_INDEX: u32 = 0x0100_1000;
/// NV index of the AK certificate (DER), in the owner-defined range.
pub const AK_CERT_NV_INDEX: u32 = 0x0100_1001;

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
const TPM_CC_SHUTDOWN: u32 = 0x0000_0145;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const TPM_RH_OWNER: u32 = 0x4000_0001;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ECC_NIST_P256: u16 = 0x0003;

/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | restricted | sign.
const AK_ATTRIBUTES: u32 =
    0x0000_0002 | 0x0000_0010 | 0x0000_0020 | 0x0000_0040 | 0x0000_0400 | 0x0001_0000 | 0x0004_0000;
/// OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD | NO_DA (an ordinary index).
const NV_ATTRIBUTES: u32 = 0x0000_0002 | 0x0000_0004 | 0x0002_0000 | 0x0004_0000 | 0x0200_0000;

/// Bytes per `TPM2_NV_Write` (below every TPM's `TPM_PT_NV_BUFFER_MAX`; libtpms: 1024).
const NV_CHUNK: usize = 512;
/// Largest response accepted from the TPM.
const MAX_RESPONSE: usize = 8192;

/// A TPM command failed or its response is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpmCommandError {
    /// The TPM answered with a non-zero response code.
    #[error("TPM2_{command} failed with response code {code:#x}")]
    Rc {
        /// The command.
        command: &'static str,
        /// TPM_RC.
        code: u32,
    },
    /// The response is shorter or longer than its structure.
    #[error("TPM2_{command}: malformed response ({reason})")]
    Malformed {
        /// The command.
        command: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The socket to the TPM failed.
    #[error("TPM2_{command}: {message}")]
    Io {
        /// The command.
        command: &'static str,
        /// The I/O error.
        message: String,
    },
    /// A value does not fit the command.
    #[error("{0}")]
    TooLarge(&'static str),
}

/// The qemu-vtpm AK template (`TPMT_PUBLIC`): an ECC NIST P-256 restricted signing key
/// (ECDSA with SHA-256) that never leaves the TPM. ECC because deriving it costs
/// milliseconds under emulation, where an RSA primary key takes seconds.
pub fn ak_template() -> Vec<u8> {
    let mut t = Vec::with_capacity(24);
    t.extend(TPM_ALG_ECC.to_be_bytes());
    t.extend(TPM_ALG_SHA256.to_be_bytes());
    t.extend(AK_ATTRIBUTES.to_be_bytes());
    t.extend(0u16.to_be_bytes()); // authPolicy: empty
    t.extend(TPM_ALG_NULL.to_be_bytes()); // symmetric: none (a signing key)
    t.extend(TPM_ALG_ECDSA.to_be_bytes()); // scheme
    t.extend(TPM_ALG_SHA256.to_be_bytes()); // scheme hash
    t.extend(TPM_ECC_NIST_P256.to_be_bytes());
    t.extend(TPM_ALG_NULL.to_be_bytes()); // kdf
    t.extend(0u16.to_be_bytes()); // unique.x: empty
    t.extend(0u16.to_be_bytes()); // unique.y: empty
    t
}

fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let len = 10 + body.len();
    let mut c = Vec::with_capacity(len);
    c.extend(tag.to_be_bytes());
    // Bodies here are at most a few hundred bytes.
    c.extend(u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    c.extend(code.to_be_bytes());
    c.extend(body);
    c
}

/// The authorisation area with one empty password session.
fn password_auth() -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..4].copy_from_slice(&9u32.to_be_bytes());
    a[4..8].copy_from_slice(&TPM_RS_PW.to_be_bytes());
    // nonce (empty), sessionAttributes 0, hmac (empty): all zero.
    a
}

fn tpm2b(data: &[u8]) -> Result<Vec<u8>, TpmCommandError> {
    let n = u16::try_from(data.len()).map_err(|_| TpmCommandError::TooLarge("TPM2B too long"))?;
    let mut v = n.to_be_bytes().to_vec();
    v.extend(data);
    Ok(v)
}

/// `TPM2_CreatePrimary` in the endorsement hierarchy from `template` (a `TPMT_PUBLIC`).
pub fn create_primary_endorsement(template: &[u8]) -> Result<Vec<u8>, TpmCommandError> {
    let mut b = Vec::new();
    b.extend(TPM_RH_ENDORSEMENT.to_be_bytes());
    b.extend(password_auth());
    b.extend([0, 4, 0, 0, 0, 0]); // inSensitive: empty userAuth and data
    b.extend(tpm2b(template)?);
    b.extend(0u16.to_be_bytes()); // outsideInfo
    b.extend(0u32.to_be_bytes()); // creationPCR: none
    Ok(command(TPM_ST_SESSIONS, TPM_CC_CREATE_PRIMARY, &b))
}

/// `TPM2_FlushContext(handle)`.
pub fn flush_context(handle: u32) -> Vec<u8> {
    command(
        TPM_ST_NO_SESSIONS,
        TPM_CC_FLUSH_CONTEXT,
        &handle.to_be_bytes(),
    )
}

/// `TPM2_NV_DefineSpace` of an owner-read/writable ordinary index of `size` bytes.
pub fn nv_define_space(index: u32, size: u16) -> Vec<u8> {
    let mut public = Vec::with_capacity(14);
    public.extend(index.to_be_bytes());
    public.extend(TPM_ALG_SHA256.to_be_bytes());
    public.extend(NV_ATTRIBUTES.to_be_bytes());
    public.extend(0u16.to_be_bytes()); // authPolicy
    public.extend(size.to_be_bytes());
    let mut b = Vec::new();
    b.extend(TPM_RH_OWNER.to_be_bytes());
    b.extend(password_auth());
    b.extend(0u16.to_be_bytes()); // auth: empty
    b.extend(14u16.to_be_bytes());
    b.extend(public);
    command(TPM_ST_SESSIONS, TPM_CC_NV_DEFINE_SPACE, &b)
}

/// `TPM2_NV_Write` of `data` at `offset` with owner authorisation.
pub fn nv_write(index: u32, offset: u16, data: &[u8]) -> Result<Vec<u8>, TpmCommandError> {
    let mut b = Vec::new();
    b.extend(TPM_RH_OWNER.to_be_bytes());
    b.extend(index.to_be_bytes());
    b.extend(password_auth());
    b.extend(tpm2b(data)?);
    b.extend(offset.to_be_bytes());
    Ok(command(TPM_ST_SESSIONS, TPM_CC_NV_WRITE, &b))
}

/// `TPM2_Shutdown(TPM_SU_CLEAR)`.
pub fn shutdown() -> Vec<u8> {
    command(TPM_ST_NO_SESSIONS, TPM_CC_SHUTDOWN, &0u16.to_be_bytes())
}

/// The body of a response after its header, or the TPM's error.
pub fn response_body<'a>(
    command: &'static str,
    resp: &'a [u8],
) -> Result<&'a [u8], TpmCommandError> {
    let malformed = |reason| TpmCommandError::Malformed { command, reason };
    let header = resp.get(..10).ok_or(malformed("shorter than its header"))?;
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let code = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    if usize::try_from(size).ok() != Some(resp.len()) {
        return Err(malformed("size field differs from the bytes received"));
    }
    if code != 0 {
        return Err(TpmCommandError::Rc { command, code });
    }
    Ok(&resp[10..])
}

/// The object handle and the `TPM2B_PUBLIC` of a `TPM2_CreatePrimary` response.
pub fn parse_create_primary(resp: &[u8]) -> Result<(u32, Vec<u8>), TpmCommandError> {
    const CMD: &str = "CreatePrimary";
    let malformed = |reason| TpmCommandError::Malformed {
        command: CMD,
        reason,
    };
    let body = response_body(CMD, resp)?;
    // objectHandle, parameterSize, then outPublic (TPM2B_PUBLIC) first among the parameters.
    let handle = body
        .get(..4)
        .ok_or(malformed("no object handle"))?
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| malformed("no object handle"))?;
    let len = body
        .get(8..10)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(malformed("no outPublic"))?;
    let public = body
        .get(8..10 + len)
        .ok_or(malformed("outPublic truncated"))?;
    Ok((handle, public.to_vec()))
}

/// Sends one command over a TPM command channel (swtpm's `--server`) and reads its response.
pub fn transact<S: Read + Write>(
    stream: &mut S,
    name: &'static str,
    cmd: &[u8],
) -> Result<Vec<u8>, TpmCommandError> {
    let io = |e: std::io::Error| TpmCommandError::Io {
        command: name,
        message: e.to_string(),
    };
    stream.write_all(cmd).map_err(io)?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header).map_err(io)?;
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if !(10..=MAX_RESPONSE).contains(&size) {
        return Err(TpmCommandError::Malformed {
            command: name,
            reason: "response size out of range",
        });
    }
    let mut resp = header.to_vec();
    resp.resize(size, 0);
    stream.read_exact(&mut resp[10..]).map_err(io)?;
    Ok(resp)
}

/// Provisions the AK root over an open TPM command channel: template into NV, the AK derived
/// from it, `certify(ak TPM2B_PUBLIC)` → certificate into NV. Returns the AK's `TPM2B_PUBLIC`.
pub fn provision_ak<S: Read + Write, E: std::fmt::Display>(
    stream: &mut S,
    certify: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, ProvisionError> {
    let template = ak_template();
    write_nv(stream, AK_TEMPLATE_NV_INDEX, &template)?;
    let resp = transact(
        stream,
        "CreatePrimary",
        &create_primary_endorsement(&template)?,
    )?;
    let (handle, public) = parse_create_primary(&resp)?;
    response_body(
        "FlushContext",
        &transact(stream, "FlushContext", &flush_context(handle))?,
    )?;
    let cert = certify(&public).map_err(|e| ProvisionError::Certify(e.to_string()))?;
    write_nv(stream, AK_CERT_NV_INDEX, &cert)?;
    response_body("Shutdown", &transact(stream, "Shutdown", &shutdown())?)?;
    Ok(public)
}

fn write_nv<S: Read + Write>(
    stream: &mut S,
    index: u32,
    data: &[u8],
) -> Result<(), TpmCommandError> {
    let size =
        u16::try_from(data.len()).map_err(|_| TpmCommandError::TooLarge("NV data too long"))?;
    response_body(
        "NV_DefineSpace",
        &transact(stream, "NV_DefineSpace", &nv_define_space(index, size))?,
    )?;
    for (i, chunk) in data.chunks(NV_CHUNK).enumerate() {
        let offset = u16::try_from(i * NV_CHUNK)
            .map_err(|_| TpmCommandError::TooLarge("NV data too long"))?;
        response_body(
            "NV_Write",
            &transact(stream, "NV_Write", &nv_write(index, offset, chunk)?)?,
        )?;
    }
    Ok(())
}

/// Provisioning the AK root failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A TPM command failed.
    #[error(transparent)]
    Tpm(#[from] TpmCommandError),
    /// The caller could not certify the AK.
    #[error("certifying the attestation key: {0}")]
    Certify(String),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn template_is_a_restricted_p256_signing_key() {
        assert_eq!(
            hex(&ak_template()),
            "0023000b00050472000000100018000b0003001000000000"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn command_encodings() {
        assert_eq!(
            hex(&flush_context(0x8000_0000)),
            "80010000000e0000016580000000"
        );
        assert_eq!(hex(&shutdown()), "80010000000c000001450000");
        assert_eq!(
            hex(&nv_define_space(AK_CERT_NV_INDEX, 0x200)),
            "80020000002d0000012a40000001000000094000000900000000000000000e\
             01001001000b0206000600000200"
        );
        assert_eq!(
            hex(&nv_write(AK_CERT_NV_INDEX, 0x200, &[0xaa]).unwrap()),
            "800200000024000001374000000101001001000000094000000900000000000001aa0200"
        );
        let cp = create_primary_endorsement(&ak_template()).unwrap();
        assert_eq!(cp.len(), 10 + 4 + 13 + 6 + 2 + 24 + 2 + 4);
        assert_eq!(hex(&cp[..14]), "800200000041000001314000000b");
    }

    #[test]
    fn responses() {
        let err = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x4c];
        assert_eq!(
            response_body("NV_Write", &err),
            Err(TpmCommandError::Rc {
                command: "NV_Write",
                code: 0x14c
            })
        );
        assert!(matches!(
            response_body("NV_Write", &err[..9]),
            Err(TpmCommandError::Malformed { .. })
        ));
        let mut cp = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        cp.extend([0x80, 0, 0, 0]); // handle
        cp.extend([0, 0, 0, 5]); // parameterSize
        cp.extend([0, 3, 1, 2, 3]);
        let n = u8::try_from(cp.len()).unwrap();
        cp[5] = n;
        assert_eq!(
            parse_create_primary(&cp).unwrap(),
            (0x8000_0000, vec![0, 3, 1, 2, 3])
        );
        cp.truncate(cp.len() - 1);
        cp[5] = n - 1;
        assert!(parse_create_primary(&cp).is_err());
    }
}
