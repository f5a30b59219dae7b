//! Which certificates a mode trusts, and the rustls verifiers that check them.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{Error, Result, SslMode};

/// The `sslrootcert` value that selects the bundled Mozilla roots, as in libpq 16.
pub(crate) const SYSTEM_ROOTS: &str = "system";

/// libpq's default root certificate file, under the home directory.
const DEFAULT_ROOT_CERT: &str = ".postgresql/root.crt";

/// How the server's certificate is checked.
pub(crate) enum Verification {
    /// Not at all: the connection is encrypted but not authenticated (`prefer`, `require`).
    None,
    /// The chain must lead to one of the roots; the host name is not checked (`verify-ca`).
    Chain(RootCertStore),
    /// The chain and the host name (`verify-full`).
    Full(RootCertStore),
}

impl Verification {
    /// Decides the checks of `mode`, loading the roots it needs.
    ///
    /// `home` is the home directory, where `.postgresql/root.crt` is looked for when `verify-ca`
    /// or `verify-full` come without `sslrootcert`.
    pub(crate) fn for_mode(
        mode: SslMode,
        rootcert: Option<&str>,
        home: Option<&Path>,
    ) -> Result<Self> {
        // libpq treats an empty value as unset.
        let rootcert = rootcert.filter(|value| !value.is_empty());
        if rootcert == Some(SYSTEM_ROOTS) && mode != SslMode::VerifyFull {
            return Err(Error::WeakModeWithSystemRoots { mode });
        }
        Ok(match mode {
            SslMode::Disable | SslMode::Prefer => Self::None,
            // As libpq: a root certificate given to `require` makes it check the chain.
            SslMode::Require => match rootcert {
                Some(path) => Self::Chain(load_roots(Path::new(path))?),
                None => Self::None,
            },
            SslMode::VerifyCa => Self::Chain(roots(mode, rootcert, home)?),
            SslMode::VerifyFull => Self::Full(roots(mode, rootcert, home)?),
        })
    }

    /// The rustls verifier that carries out these checks.
    pub(crate) fn verifier(
        self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>> {
        Ok(match self {
            Self::None => Arc::new(LaxVerifier { roots: None, provider: Arc::clone(provider) }),
            Self::Chain(roots) => Arc::new(LaxVerifier {
                roots: Some(Arc::new(roots)),
                provider: Arc::clone(provider),
            }),
            Self::Full(roots) => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .build()
                    .map_err(|source| Error::Tls { source: source.into() })?
            }
        })
    }
}

fn roots(mode: SslMode, rootcert: Option<&str>, home: Option<&Path>) -> Result<RootCertStore> {
    match rootcert {
        Some(SYSTEM_ROOTS) => Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
        Some(path) => load_roots(Path::new(path)),
        None => {
            let default = home.map(|home| home.join(DEFAULT_ROOT_CERT));
            match default {
                Some(path) if path.exists() => load_roots(&path),
                _ => Err(Error::MissingRootCert {
                    mode,
                    default: default.map_or_else(
                        || format!("~/{DEFAULT_ROOT_CERT}"),
                        |path| path.display().to_string(),
                    ),
                }),
            }
        }
    }
}

/// Reads every certificate of a PEM file; other PEM sections, such as CRLs, are skipped.
fn load_roots(path: &Path) -> Result<RootCertStore> {
    let pem = fs::read(path)
        .map_err(|source| Error::ReadRootCert { path: path.to_path_buf(), source })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::NoRootCert { path: path.to_path_buf() })?;
    if certs.is_empty() {
        return Err(Error::NoRootCert { path: path.to_path_buf() });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|source| Error::InvalidRootCert { path: PathBuf::from(path), source })?;
    }
    Ok(roots)
}

/// A verifier that checks less than rustls's default one: the certificate is accepted as it
/// is (libpq's `prefer` and `require` without a root certificate), or its chain is checked
/// against the roots but not the host name (libpq's `verify-ca`).
///
/// The handshake signatures are always checked, so the server must hold the key of the
/// certificate it sent.
struct LaxVerifier {
    /// `None`: any certificate; `Some`: a chain to one of these roots.
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for LaxVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaxVerifier")
            .field("roots", &self.roots.as_ref().map(|roots| roots.len()))
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for LaxVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_and_disable_never_read_a_root_certificate() {
        for mode in [SslMode::Disable, SslMode::Prefer] {
            let verification =
                Verification::for_mode(mode, Some("/does/not/exist.pem"), None).unwrap();
            assert!(matches!(verification, Verification::None));
        }
    }

    #[test]
    fn require_checks_nothing_without_a_root_certificate() {
        let verification = Verification::for_mode(SslMode::Require, None, None).unwrap();
        assert!(matches!(verification, Verification::None));
    }

    #[test]
    fn require_with_a_root_certificate_reads_it() {
        let error =
            Verification::for_mode(SslMode::Require, Some("/does/not/exist.pem"), None).err();
        let message = error.unwrap().to_string();
        assert_eq!(message, "cannot read the `sslrootcert` file `/does/not/exist.pem`");
    }

    #[test]
    fn verify_modes_name_the_missing_default_file() {
        let home = tempfile::tempdir().unwrap();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let error = Verification::for_mode(mode, None, Some(home.path())).err().unwrap();
            let message = error.to_string();
            let expected = home.path().join(".postgresql/root.crt");
            assert!(message.contains(&format!("`{}`", expected.display())), "{message}");
            assert!(message.contains(&format!("`sslmode={mode}`")), "{message}");
        }
        let error = Verification::for_mode(SslMode::VerifyFull, None, None).err().unwrap();
        assert!(error.to_string().contains("`~/.postgresql/root.crt`"), "{error}");
    }

    #[test]
    fn system_roots_need_verify_full() {
        let full = Verification::for_mode(SslMode::VerifyFull, Some("system"), None).unwrap();
        assert!(matches!(full, Verification::Full(roots) if !roots.is_empty()));
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa] {
            let error = Verification::for_mode(mode, Some("system"), None).err().unwrap();
            assert!(matches!(error, Error::WeakModeWithSystemRoots { .. }), "{error}");
        }
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, "not a certificate\n").unwrap();
        let error = Verification::for_mode(SslMode::VerifyCa, path.to_str(), None).err().unwrap();
        assert!(matches!(error, Error::NoRootCert { .. }), "{error}");
    }
}
