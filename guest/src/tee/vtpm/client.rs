//! The handful of TPM 2.0 commands a guest needs, marshalled with `tpm2-protocol`.
//!
//! Startup (harmless when the firmware or kernel already did it), CreatePrimary of the
//! attestation key, ReadPublic of a persistent one, PCR_Read, PCR_Extend, Quote, NV_Read,
//! FlushContext. Authorization is the empty password session (`TPM_RS_PW`): the guest is
//! the only user of its vTPM and sets no auth values, as the clouds' vTPMs ship.

use tpm2_protocol::basic::{TpmHandle, TpmList};
use tpm2_protocol::data::{
    Tpm2bPublic, TpmAlgId, TpmEccCurve, TpmRh, TpmSt, TpmSu, TpmaObject, TpmaSession,
    TpmlPcrSelection, TpmsAuthCommand, TpmsEccParms, TpmsEccPoint, TpmsPcrSelect, TpmsPcrSelection,
    TpmsSchemeHash, TpmtEccScheme, TpmtHa, TpmtKdfScheme, TpmtPublic, TpmtSigScheme,
    TpmtSymDefObject, TpmuAsymScheme, TpmuHa, TpmuPublicId, TpmuPublicParms, TpmuSigScheme,
};
use tpm2_protocol::frame::{
    tpm_marshal_command, TpmCreatePrimaryCommand, TpmCreatePrimaryResponse, TpmFlushContextCommand,
    TpmNvReadCommand, TpmNvReadPublicCommand, TpmNvReadPublicResponse, TpmNvReadResponse,
    TpmPcrExtendCommand, TpmPcrReadCommand, TpmPcrReadResponse, TpmQuoteCommand,
    TpmReadPublicCommand, TpmReadPublicResponse, TpmResponse, TpmStartupCommand, TpmUnmarshalBody,
};
use tpm2_protocol::{TpmMarshal, TpmWriter};

use super::transport::{TpmTransport, VtpmEndpoint};
use crate::{Error, Result};

/// `TPM_RC_INITIALIZE`: Startup was already done.
const RC_INITIALIZE: u32 = 0x100;
/// Warnings that ask the caller to send the same command again: `TPM_RC_RETRY`,
/// `TPM_RC_YIELDED`, `TPM_RC_TESTING` (libtpms answers RETRY to some ECDSA signings).
const RC_TRY_AGAIN: [u32; 3] = [0x922, 0x908, 0x90A];
/// How often a command is resent on those warnings, and the pause between.
const RETRIES: usize = 20;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// Largest NV read per command (TPM2's `MAX_NV_BUFFER_SIZE` is at least 512; 1024 on
/// most TPMs; 512 is safe everywhere).
const NV_CHUNK: u16 = 512;

/// A connection to a TPM and the commands the guest sends it.
pub struct Tpm {
    endpoint: VtpmEndpoint,
    transport: Box<dyn TpmTransport>,
}

fn marshal_error(e: impl std::fmt::Debug) -> Error {
    Error::Tee(format!("cannot marshal a TPM command: {e:?}"))
}

fn password_session() -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: TpmHandle::new(TpmRh::Pw as u32),
        nonce: Default::default(),
        session_attributes: TpmaSession::default(),
        hmac: Default::default(),
    }
}

/// The SHA-256 bank selection of `pcrs`.
fn sha256_selection(pcrs: &[u8]) -> Result<TpmlPcrSelection> {
    let mut bitmap = [0u8; 3];
    for pcr in pcrs {
        if *pcr > 23 {
            return Err(Error::Tee(format!("PCR {pcr} does not exist (0-23)")));
        }
        bitmap[usize::from(pcr / 8)] |= 1 << (pcr % 8);
    }
    let mut list = TpmList::default();
    list.try_push(TpmsPcrSelection {
        hash: TpmAlgId::Sha256,
        pcr_select: TpmsPcrSelect::try_from(&bitmap[..]).map_err(marshal_error)?,
    })
    .map_err(marshal_error)?;
    Ok(list)
}

/// The attestation key template: an ECC P-256 restricted signing key (ECDSA, SHA-256)
/// in the endorsement hierarchy. A primary key is derived from the hierarchy's seed and
/// the template, so the same vTPM gives the same AK at every boot.
fn ak_template() -> TpmtPublic {
    TpmtPublic {
        object_type: TpmAlgId::Ecc,
        name_alg: TpmAlgId::Sha256,
        object_attributes: TpmaObject::FIXED_TPM
            | TpmaObject::FIXED_PARENT
            | TpmaObject::SENSITIVE_DATA_ORIGIN
            | TpmaObject::USER_WITH_AUTH
            | TpmaObject::RESTRICTED
            | TpmaObject::SIGN_ENCRYPT,
        auth_policy: Default::default(),
        parameters: TpmuPublicParms::Ecc(TpmsEccParms {
            symmetric: TpmtSymDefObject {
                algorithm: TpmAlgId::Null,
                ..Default::default()
            },
            scheme: TpmtEccScheme {
                scheme: TpmAlgId::Ecdsa,
                details: TpmuAsymScheme::Hash(TpmsSchemeHash {
                    hash_alg: TpmAlgId::Sha256,
                }),
            },
            curve_id: TpmEccCurve::NistP256,
            kdf: TpmtKdfScheme {
                scheme: TpmAlgId::Null,
                details: Default::default(),
            },
        }),
        unique: TpmuPublicId::Ecc(TpmsEccPoint::default()),
    }
}

/// A signed quote, as the TPM returned it.
#[derive(Debug, Clone)]
pub struct RawQuote {
    /// The `TPMS_ATTEST` bytes that were signed.
    pub attest: Vec<u8>,
    /// The `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
}

impl Tpm {
    /// Connects and makes sure the TPM is started.
    pub fn open(endpoint: &VtpmEndpoint) -> Result<Self> {
        let mut tpm = Self {
            endpoint: endpoint.clone(),
            transport: super::transport::open(endpoint)?,
        };
        let startup = TpmStartupCommand {
            handles: [],
            startup_type: TpmSu::Clear,
        };
        tpm.command_allowing(&startup, false, &[RC_INITIALIZE])?;
        Ok(tpm)
    }

    pub fn endpoint(&self) -> &VtpmEndpoint {
        &self.endpoint
    }

    /// Sends one command; returns the response bytes after checking its code.
    fn command<C: tpm2_protocol::frame::TpmFrame>(
        &mut self,
        command: &C,
        authorized: bool,
    ) -> Result<Vec<u8>> {
        self.command_allowing(command, authorized, &[])
    }

    /// As [`Self::command`], also accepting the response codes in `allowed`.
    fn command_allowing<C: tpm2_protocol::frame::TpmFrame>(
        &mut self,
        command: &C,
        authorized: bool,
        allowed: &[u32],
    ) -> Result<Vec<u8>> {
        let mut buffer = vec![0u8; 4096];
        let mut writer = TpmWriter::new(&mut buffer);
        let sessions = [password_session()];
        let (tag, sessions): (TpmSt, &[TpmsAuthCommand]) = if authorized {
            (TpmSt::Sessions, &sessions)
        } else {
            (TpmSt::NoSessions, &[])
        };
        tpm_marshal_command(command, tag, sessions, &mut writer).map_err(marshal_error)?;
        let len = writer.len();
        let mut response = self.transport.transact(&buffer[..len])?;
        for _ in 0..RETRIES {
            if response.len() < 10 || !RC_TRY_AGAIN.contains(&code_of(&response)) {
                break;
            }
            std::thread::sleep(RETRY_PAUSE);
            response = self.transport.transact(&buffer[..len])?;
        }
        let view = TpmResponse::cast(&response).map_err(|e| self.bad(format!("{e:?}")))?;
        let code = code_of(&response);
        if code != 0 && !allowed.contains(&code) {
            let rc = view
                .rc()
                .map(|rc| format!("{rc:?}"))
                .unwrap_or_else(|_| "unknown".into());
            return Err(Error::TeeInterface {
                interface: format!("vTPM {}", self.endpoint),
                detail: format!("{:?} failed: rc 0x{code:x} ({rc})", command.cc()),
            });
        }
        Ok(response)
    }

    fn parse<R: TpmUnmarshalBody>(&self, response: &[u8]) -> Result<R> {
        TpmResponse::cast(response)
            .and_then(|r| r.unmarshal::<R>())
            .map_err(|e| self.bad(format!("{e:?}")))
    }

    fn bad(&self, detail: String) -> Error {
        Error::TeeInterface {
            interface: format!("vTPM {}", self.endpoint),
            detail: format!("malformed response: {detail}"),
        }
    }

    /// Creates (re-derives) the attestation key; returns its transient handle and its
    /// marshalled `TPMT_PUBLIC`.
    pub fn create_attestation_key(&mut self) -> Result<(u32, Vec<u8>)> {
        let command = TpmCreatePrimaryCommand {
            handles: [TpmHandle::new(TpmRh::Endorsement as u32)],
            in_sensitive: Default::default(),
            in_public: Tpm2bPublic {
                inner: ak_template(),
            },
            outside_info: Default::default(),
            creation_pcr: Default::default(),
        };
        let response = self.command(&command, true)?;
        let created: TpmCreatePrimaryResponse = self.parse(&response)?;
        let public = marshal(&created.out_public.inner)?;
        Ok((u32::from(created.handles[0]), public))
    }

    /// The marshalled `TPMT_PUBLIC` of a loaded or persistent key.
    pub fn read_public(&mut self, handle: u32) -> Result<Vec<u8>> {
        let command = TpmReadPublicCommand {
            handles: [TpmHandle::new(handle)],
        };
        let response = self.command(&command, false)?;
        let read: TpmReadPublicResponse = self.parse(&response)?;
        marshal(&read.out_public.inner)
    }

    /// Forgets a transient object.
    pub fn flush(&mut self, handle: u32) -> Result<()> {
        let command = TpmFlushContextCommand {
            handles: [],
            flush_handle: TpmHandle::new(handle),
        };
        self.command(&command, false).map(|_| ())
    }

    /// Extends SHA-256-bank PCR `pcr` with `digest` (32 bytes).
    pub fn pcr_extend_sha256(&mut self, pcr: u8, digest: &[u8; 32]) -> Result<()> {
        let mut digests = TpmList::default();
        digests
            .try_push(TpmtHa {
                hash_alg: TpmAlgId::Sha256,
                digest: TpmuHa::Digest(digest[..].try_into().map_err(marshal_error)?),
            })
            .map_err(marshal_error)?;
        let command = TpmPcrExtendCommand {
            handles: [TpmHandle::new(u32::from(pcr))],
            digests,
        };
        self.command(&command, true).map(|_| ())
    }

    /// The SHA-256-bank values of `pcrs` (ascending), read eight at a time.
    pub fn pcr_read_sha256(&mut self, pcrs: &[u8]) -> Result<Vec<(u8, Vec<u8>)>> {
        let mut sorted = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::new();
        for chunk in sorted.chunks(8) {
            let command = TpmPcrReadCommand {
                handles: [],
                pcr_selection_in: sha256_selection(chunk)?,
            };
            let response = self.command(&command, false)?;
            let read: TpmPcrReadResponse = self.parse(&response)?;
            if read.pcr_values.len() != chunk.len() {
                return Err(self.bad(format!(
                    "asked for {} PCRs, got {} (is the SHA-256 bank allocated?)",
                    chunk.len(),
                    read.pcr_values.len()
                )));
            }
            for (pcr, value) in chunk.iter().zip(read.pcr_values.iter()) {
                out.push((*pcr, value.to_vec()));
            }
        }
        Ok(out)
    }

    /// A quote by `ak` over the SHA-256-bank `pcrs` with `qualifying_data`, signed with
    /// the key's own scheme.
    pub fn quote(&mut self, ak: u32, qualifying_data: &[u8], pcrs: &[u8]) -> Result<RawQuote> {
        let command = TpmQuoteCommand {
            handles: [TpmHandle::new(ak)],
            qualifying_data: qualifying_data.try_into().map_err(marshal_error)?,
            in_scheme: TpmtSigScheme {
                scheme: TpmAlgId::Null,
                details: TpmuSigScheme::Null,
            },
            pcr_select: sha256_selection(pcrs)?,
        };
        let response = self.command(&command, true)?;
        // Take the signed bytes exactly as the TPM produced them: parameterSize, then
        // TPM2B_ATTEST, then TPMT_SIGNATURE.
        let body = response.get(10..).unwrap_or_default();
        let params_len = body
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| self.bad("no parameter size".into()))?;
        let params = body
            .get(4..4 + params_len)
            .ok_or_else(|| self.bad("parameters past the end".into()))?;
        let attest_len = params
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| self.bad("no TPM2B_ATTEST".into()))?;
        let attest = params
            .get(2..2 + attest_len)
            .ok_or_else(|| self.bad("TPM2B_ATTEST past the end".into()))?;
        Ok(RawQuote {
            attest: attest.to_vec(),
            signature: params[2 + attest_len..].to_vec(),
        })
    }

    /// The whole contents of NV index `index` (owner-readable; empty password).
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>> {
        let command = TpmNvReadPublicCommand {
            handles: [TpmHandle::new(index)],
        };
        let response = self.command(&command, false)?;
        let public: TpmNvReadPublicResponse = self.parse(&response)?;
        let size = u16::from(public.nv_public.inner.data_size);
        let mut data = Vec::with_capacity(usize::from(size));
        while data.len() < usize::from(size) {
            let offset = data.len() as u16;
            let chunk = NV_CHUNK.min(size - offset);
            let command = TpmNvReadCommand {
                handles: [TpmHandle::new(index), TpmHandle::new(index)],
                size: chunk.into(),
                offset: offset.into(),
            };
            let response = self.command(&command, true)?;
            let read: TpmNvReadResponse = self.parse(&response)?;
            if read.data.is_empty() {
                return Err(self.bad(format!("NV index 0x{index:08x} returned no data")));
            }
            data.extend_from_slice(&read.data);
        }
        Ok(data)
    }
}

/// Provisioning a TPM the way a cloud's paravisor does before the guest boots: used to
/// make swtpm a faithful stand-in for Azure's vTPM in development and tests.
#[cfg(feature = "simulated")]
impl Tpm {
    /// Creates an RSA-2048 restricted signing key (RSASSA, SHA-256) in the endorsement
    /// hierarchy, as Azure's AK is, and makes it persistent at `handle`.
    pub fn provision_rsa_attestation_key(&mut self, handle: u32) -> Result<Vec<u8>> {
        use tpm2_protocol::data::{TpmsRsaParms, TpmtRsaScheme};
        use tpm2_protocol::frame::TpmEvictControlCommand;
        let mut template = ak_template();
        template.object_type = TpmAlgId::Rsa;
        template.parameters = TpmuPublicParms::Rsa(TpmsRsaParms {
            symmetric: TpmtSymDefObject {
                algorithm: TpmAlgId::Null,
                ..Default::default()
            },
            scheme: TpmtRsaScheme {
                scheme: TpmAlgId::Rsassa,
                details: TpmuAsymScheme::Hash(TpmsSchemeHash {
                    hash_alg: TpmAlgId::Sha256,
                }),
            },
            key_bits: 2048u16.into(),
            exponent: 0u32.into(),
        });
        template.unique = TpmuPublicId::Rsa(Default::default());
        let command = TpmCreatePrimaryCommand {
            handles: [TpmHandle::new(TpmRh::Endorsement as u32)],
            in_sensitive: Default::default(),
            in_public: Tpm2bPublic { inner: template },
            outside_info: Default::default(),
            creation_pcr: Default::default(),
        };
        let response = self.command(&command, true)?;
        let created: TpmCreatePrimaryResponse = self.parse(&response)?;
        let transient = created.handles[0];
        let evict = TpmEvictControlCommand {
            handles: [TpmHandle::new(TpmRh::Owner as u32), transient],
            persistent_handle: TpmHandle::new(handle),
        };
        self.command(&evict, true)?;
        self.flush(u32::from(transient))?;
        marshal(&created.out_public.inner)
    }

    /// Defines NV index `index` (owner- and auth-readable and -writable) and writes `data`.
    pub fn provision_nv(&mut self, index: u32, data: &[u8]) -> Result<()> {
        use tpm2_protocol::data::{Tpm2bNvPublic, TpmaNv, TpmsNvPublic};
        use tpm2_protocol::frame::{TpmNvDefineSpaceCommand, TpmNvWriteCommand};
        let size = u16::try_from(data.len())
            .map_err(|_| Error::Tee(format!("{} bytes do not fit an NV index", data.len())))?;
        let define = TpmNvDefineSpaceCommand {
            handles: [TpmHandle::new(TpmRh::Owner as u32)],
            auth: Default::default(),
            public_info: Tpm2bNvPublic {
                inner: TpmsNvPublic {
                    nv_index: TpmHandle::new(index),
                    name_alg: TpmAlgId::Sha256,
                    attributes: TpmaNv::OWNERWRITE
                        | TpmaNv::AUTHWRITE
                        | TpmaNv::OWNERREAD
                        | TpmaNv::AUTHREAD
                        | TpmaNv::NO_DA,
                    auth_policy: Default::default(),
                    data_size: size.into(),
                },
            },
        };
        self.command(&define, true)?;
        for (i, chunk) in data.chunks(usize::from(NV_CHUNK)).enumerate() {
            let write = TpmNvWriteCommand {
                handles: [TpmHandle::new(index), TpmHandle::new(index)],
                data: chunk.try_into().map_err(marshal_error)?,
                offset: ((i * usize::from(NV_CHUNK)) as u16).into(),
            };
            self.command(&write, true)?;
        }
        Ok(())
    }
}

fn code_of(response: &[u8]) -> u32 {
    u32::from_be_bytes([response[6], response[7], response[8], response[9]])
}

/// Marshals a `TPMT_PUBLIC`.
fn marshal(public: &TpmtPublic) -> Result<Vec<u8>> {
    let mut buffer = vec![0u8; 2048];
    let mut writer = TpmWriter::new(&mut buffer);
    public.marshal(&mut writer).map_err(marshal_error)?;
    let len = writer.len();
    buffer.truncate(len);
    Ok(buffer)
}
