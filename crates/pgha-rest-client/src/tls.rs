//! TLS for calls to members (and the PEM loading the REST server shares):
//! rustls with the ring provider. Every error names the setting and the
//! file, so a bad file stops a start with something a person can fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::ClientTls;

/// Why TLS cannot be set up as configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A file (certificate, key, CA) cannot be used: the setting that
    /// names it, the file, and why.
    #[error("{setting} {}: {reason}", path.display())]
    File {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The files load but rustls refuses the combination (a key that does
    /// not match its certificate, ...).
    #[error("{setting}: {reason}")]
    Refused {
        setting: &'static str,
        reason: String,
    },
}

fn file_error(setting: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The ring provider every TLS configuration of pgha uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM certificates from `path` (at least one), errors naming `setting`.
pub fn certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(setting, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(file_error(setting, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A PEM private key from `path`.
pub fn private_key(path: &Path, setting: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(setting, path, format!("no usable private key: {e}")))
}

/// Trust anchors from a PEM CA file.
pub fn roots(path: &Path, setting: &'static str) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(path, setting)? {
        store.add(cert).map_err(|e| file_error(setting, path, e))?;
    }
    Ok(store)
}

/// The client side: trust `cacert`, present `certfile`/`keyfile` when
/// given, or (`insecure`) check nothing, as `ctl.insecure` asks.
pub fn client_config(settings: &ClientTls) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused {
            setting: "TLS versions",
            reason: e.to_string(),
        })?;
    let builder = if settings.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let store = match &settings.cacert {
            Some(ca) => roots(ca, "ctl.cacert / restapi.cafile")?,
            None => rustls::RootCertStore::empty(),
        };
        builder.with_root_certificates(store)
    };
    match (&settings.certfile, &settings.keyfile) {
        (Some(cert), Some(key)) if settings.cacert.is_some() || settings.insecure => builder
            .with_client_auth_cert(
                certificates(cert, "ctl.certfile")?,
                private_key(key, "ctl.keyfile")?,
            )
            .map_err(|e| TlsError::Refused {
                setting: "ctl.certfile/keyfile",
                reason: e.to_string(),
            }),
        _ => Ok(builder.with_no_client_auth()),
    }
}
/// `ctl.insecure`: accepts any certificate (signatures still checked).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
