//! TLS for the clients of a hub over `https://`/`wss://` (`tail`, [`super::Client`],
//! `emit`, `replay`, `demo`, `claude-hook`):
//! the system's certificate authorities (which honour `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`), plus one given PEM file (`--ca-cert`) for a hub whose
//! certificate no public authority signed.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::ClientError;

/// A rustls client configuration trusting the system's authorities and,
/// when given, the PEM certificates in `ca_cert`.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system stores are not an error: `ca_cert` may be all
    // that is needed, and a hub nobody trusts fails at the handshake with
    // its own message.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_cert {
        let bad =
            |reason: String| ClientError::Tls(format!("--ca-cert {}: {reason}", path.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP agent for a hub's `https://` URLs trusting what
/// [`client_config`] trusts (for `http://` URLs the TLS settings are unused).
pub fn http_agent(ca_cert: Option<&Path>) -> Result<ureq::AgentBuilder, ClientError> {
    Ok(ureq::AgentBuilder::new().tls_config(client_config(ca_cert)?))
}
