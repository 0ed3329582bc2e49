//! A throwaway certificate authority and certificates signed by it, for
//! `tsn_demo --tls` and the tests: one flag and a deployment runs
//! encrypted. A real deployment makes its certificates with its own tools
//! (README: "TLS").

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::TlsFiles;

/// The names every generated certificate holds, for local deployments.
pub const LOCAL_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];
/// Mode of a written private key: its owner only.
pub const KEY_FILE_MODE: u32 = 0o600;

/// The name of the CA certificate's file in a directory of certificates.
pub const CA_FILE_NAME: &str = "ca.crt";

/// A certificate authority kept in memory; its certificate is written
/// next to every certificate it issues.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Authority { issuer })
    }

    /// Writes the CA certificate to `dir/ca.crt` (unless it is there) and
    /// returns its path.
    pub fn write_ca(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(CA_FILE_NAME);
        if !path.exists() {
            replace_file(&path, self.issuer.pem().as_bytes(), 0o644)?;
        }
        Ok(path)
    }

    /// Client files in `dir` that trust this CA and present no certificate.
    pub fn trust_only(&self, dir: &Path) -> anyhow::Result<TlsFiles> {
        Ok(TlsFiles {
            ca: self.write_ca(dir)?,
            identity: None,
        })
    }

    /// A new certificate for `name` with [`LOCAL_NAMES`] as its names,
    /// written (replacing any, each file atomically) to `dir/<name>.crt`
    /// and `dir/<name>.key` (mode [`KEY_FILE_MODE`]), next to the CA's.
    pub fn issue(&self, dir: &Path, name: &str) -> anyhow::Result<TlsFiles> {
        let ca = self.write_ca(dir)?;
        let mut params = CertificateParams::new(LOCAL_NAMES.map(String::from).to_vec())?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        // The key first: a watcher that reads between the two sees a pair
        // that does not match and keeps the old one until the next change.
        replace_file(&key_path, key.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
        replace_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(TlsFiles::process(&cert_path, &key_path, &ca))
    }
}

/// Writes `path` atomically (temp file, then rename) with `mode`.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, bytes, mode)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
