//! Building rustls configurations from PEM files, with the ring provider
//! (aws-lc would need cmake and clang to build).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Largest certificate, key or CA file read (a chain of a few certificates
/// is a few KB).
pub const TLS_FILE_MAX_BYTES: u64 = 1 << 20;
/// The one application protocol of every listener.
pub const ALPN_H2: &[u8] = b"h2";

/// ring's default suites; the post-quantum key exchange rustls would add
/// needs aws-lc.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read the TLS {what} {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= TLS_FILE_MAX_BYTES,
        "the TLS {what} {} is {len} bytes, more than {TLS_FILE_MAX_BYTES}",
        path.display()
    );
    std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
}

/// Every certificate in the PEM file `path` (at least one).
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, "certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate file: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(certs)
}

pub(crate) fn load_roots(ca: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

#[derive(Clone)]
pub(crate) struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

pub(crate) fn load_identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    let certs = load_certs(cert)?;
    let pem = read(key, "key file")?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", key.display()))?;
    Ok(Identity {
        certs,
        key: Arc::new(key_der),
    })
}

pub(crate) fn server_config(
    roots: Arc<RootCertStore>,
    id: Identity,
) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    // A client certificate is verified when presented; internal services
    // refuse a connection without one (auth::Check).
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .context("cannot build the client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.certs, id.key.clone_key())
        .context("the TLS certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

pub(crate) fn client_config(
    roots: Arc<RootCertStore>,
    id: Option<Identity>,
) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let mut config = match id {
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key.clone_key())
            .context("the TLS certificate and key do not form a usable pair")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
