//! TLS on every listener and every channel, with certificates that can be
//! replaced on disk while the process runs.
//!
//! * A process given `--tls-cert --tls-key --tls-ca` (all three or none)
//!   speaks only TLS on each of its listeners ([`crate::net::incoming`]
//!   does the handshake) and presents its certificate when it calls
//!   another process, so TLS between internal processes is mutual.
//! * A listener verifies a client certificate against the CA when one is
//!   presented; a client without one may still call the open client
//!   protocols, but every internal service refuses it
//!   ([`crate::auth::Check`]), even with the right secret: with TLS on, an
//!   internal caller needs both the certificate and the secret.
//! * A client (`tsn_client`, the bench, the harness) given `--tls-ca`
//!   verifies the server's certificate (SAN matching the address it
//!   dials) and may present its own with `--tls-cert --tls-key`.
//!
//! The configurations live in a [`Tls`] holder; the files are followed
//! ([`crate::watch`]) and a change builds new configurations, which new
//! connections use at once (open ones keep theirs). A broken new file keeps
//! the current configurations and is logged.

mod config;
mod connect;
pub mod generate;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::{ClientConfig, ServerConfig};

pub use config::{load_certs, TLS_FILE_MAX_BYTES};
pub use connect::{server_certificate, Connector};
pub use rustls::pki_types::CertificateDer;

use crate::sync::lock;

/// The TLS flags every tsn process and client shares.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// This process's certificate chain (PEM). With --tls-key and --tls-ca
    /// every listener speaks only TLS; a client presents it to the server.
    #[arg(long = "tls-cert", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, PKCS#8, SEC1 or PKCS#1).
    #[arg(long = "tls-key", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The certificate authority (PEM) that peers' certificates must chain
    /// to: servers verify clients' and clients verify servers' with it.
    #[arg(long = "tls-ca", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
}

/// Which files a [`Tls`] is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// The own certificate chain and key: required to listen, optional for
    /// a plain client.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// A process's files: certificate, key and CA in `dir` under the given
    /// names.
    pub fn process(cert: &Path, key: &Path, ca: &Path) -> TlsFiles {
        TlsFiles {
            ca: ca.to_path_buf(),
            identity: Some((cert.to_path_buf(), key.to_path_buf())),
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![self.ca.clone()];
        if let Some((c, k)) = &self.identity {
            p.push(c.clone());
            p.push(k.clone());
        }
        p
    }
}

impl TlsArgs {
    /// The flags naming `files` (empty when `None`).
    pub fn of(files: Option<&TlsFiles>) -> TlsArgs {
        match files {
            None => TlsArgs::default(),
            Some(f) => TlsArgs {
                tls_cert: f.identity.as_ref().map(|(c, _)| c.clone()),
                tls_key: f.identity.as_ref().map(|(_, k)| k.clone()),
                tls_ca: Some(f.ca.clone()),
            },
        }
    }

    /// The flags as command-line arguments.
    pub fn to_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, v) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ] {
            if let Some(p) = v {
                out.push(flag.to_string());
                out.push(p.display().to_string());
            }
        }
        out
    }

    /// A server's files: all three flags or none.
    pub fn server_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles::process(cert, key, ca))),
            _ => anyhow::bail!(
                "TLS needs all three of --tls-cert, --tls-key and --tls-ca (or none of them, \
                 for plaintext)"
            ),
        }
    }

    /// A client's files: `--tls-ca` turns TLS on; `--tls-cert` and
    /// `--tls-key` come together, and only with it.
    pub fn client_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        match (&self.tls_ca, identity) {
            (None, None) => Ok(None),
            (None, Some(_)) => anyhow::bail!(
                "--tls-cert and --tls-key need --tls-ca, the CA that verifies the server"
            ),
            (Some(ca), identity) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                identity,
            })),
        }
    }

    /// [`Tls`] for a server (see [`TlsArgs::server_files`]), following its files.
    pub fn open_server(&self) -> anyhow::Result<Option<Tls>> {
        self.server_files()?.map(|f| Tls::open(&f)).transpose()
    }

    /// [`Tls`] for a client (see [`TlsArgs::client_files`]), following its files.
    pub fn open_client(&self) -> anyhow::Result<Option<Tls>> {
        self.client_files()?.map(|f| Tls::open(&f)).transpose()
    }
}

struct Configs {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

struct Shared {
    files: TlsFiles,
    configs: Mutex<Configs>,
    last_error: Mutex<Option<String>>,
}

/// The current TLS configurations of a process, kept up to date with
/// their files. Clones share them; the watch ends with the last clone.
#[derive(Clone)]
pub struct Tls {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.shared.files)
            .finish()
    }
}

impl Tls {
    /// Reads the files (an error says which one is wrong and why) and
    /// starts following them.
    pub fn open(files: &TlsFiles) -> anyhow::Result<Tls> {
        let tls = Tls::load(files)?;
        let paths = tls.shared.files.paths();
        crate::watch::follow(
            "tls-files",
            paths,
            Arc::downgrade(&tls.shared),
            |shared: &Shared| reload_shared(shared),
        )?;
        Ok(tls)
    }

    /// Reads the files without following them.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        Ok(Tls {
            shared: Arc::new(Shared {
                files: files.clone(),
                configs: Mutex::new(build(files)?),
                last_error: Mutex::new(None),
            }),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.shared.files
    }

    /// Re-reads the files now (what the watch does); on error the current
    /// configurations stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let next = build(&self.shared.files)?;
        *lock(&self.shared.configs) = next;
        Ok(())
    }

    /// The configuration a listener accepts new connections with (`None`
    /// for a client without a certificate of its own).
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        lock(&self.shared.configs).server.clone()
    }

    /// The configuration new outgoing connections use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        lock(&self.shared.configs).client.clone()
    }
}

fn build(files: &TlsFiles) -> anyhow::Result<Configs> {
    let roots = config::load_roots(&files.ca)?;
    let identity = match &files.identity {
        Some((cert, key)) => Some(config::load_identity(cert, key)?),
        None => None,
    };
    Ok(Configs {
        server: match &identity {
            Some(id) => Some(Arc::new(config::server_config(roots.clone(), id.clone())?)),
            None => None,
        },
        client: Arc::new(config::client_config(roots, identity)?),
    })
}

fn reload_shared(shared: &Shared) -> bool {
    match build(&shared.files) {
        Ok(next) => {
            *lock(&shared.configs) = next;
            *lock(&shared.last_error) = None;
            tracing::info!(files = ?shared.files,
                "TLS files changed; new connections use the new certificates");
            true
        }
        Err(e) => {
            let e = format!("{e:#}");
            let mut last = lock(&shared.last_error);
            if last.as_ref() != Some(&e) {
                tracing::error!(error = %e, "keeping the current TLS certificates");
                *last = Some(e);
            }
            false
        }
    }
}

/// A server process's TLS from its flags, made what its channels use
/// ([`set_process_tls`]) when it is on; call it before opening a channel.
pub fn open_for_process(args: &TlsArgs) -> anyhow::Result<Option<Tls>> {
    let tls = args.open_server()?;
    if tls.is_some() {
        set_process_tls(tls.clone());
    }
    Ok(tls)
}

static PROCESS_TLS: RwLock<Option<Tls>> = RwLock::new(None);

/// Makes `tls` what every channel of this process uses
/// ([`crate::coord::channel`]): a process has one TLS identity, set by its
/// `main` (or a test's launcher) before it opens a channel.
pub fn set_process_tls(tls: Option<Tls>) {
    *PROCESS_TLS.write().unwrap_or_else(|p| p.into_inner()) = tls;
}

/// The TLS every channel of this process uses, if any.
pub fn process_tls() -> Option<Tls> {
    PROCESS_TLS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::generate::Authority;
    use super::*;

    fn args(cert: bool, key: bool, ca: bool) -> TlsArgs {
        TlsArgs {
            tls_cert: cert.then(|| "c.pem".into()),
            tls_key: key.then(|| "k.pem".into()),
            tls_ca: ca.then(|| "ca.pem".into()),
        }
    }

    #[test]
    fn a_server_needs_all_three_files_or_none() {
        assert_eq!(args(false, false, false).server_files().unwrap(), None);
        assert!(args(true, true, true).server_files().unwrap().is_some());
        for (c, k, a) in [
            (true, false, false),
            (false, true, false),
            (false, false, true),
            (true, true, false),
            (true, false, true),
            (false, true, true),
        ] {
            let err = args(c, k, a).server_files().unwrap_err().to_string();
            assert!(err.contains("all three"), "{err}");
        }
    }

    #[test]
    fn a_client_needs_the_ca_and_may_add_its_own_pair() {
        assert_eq!(args(false, false, false).client_files().unwrap(), None);
        let ca_only = args(false, false, true).client_files().unwrap().unwrap();
        assert_eq!(ca_only.identity, None);
        assert!(args(true, true, true)
            .client_files()
            .unwrap()
            .unwrap()
            .identity
            .is_some());
        assert!(args(true, true, false).client_files().is_err());
        assert!(args(true, false, true).client_files().is_err());
        let flags = args(true, true, true).to_flags();
        assert_eq!(flags.len(), 6);
        assert_eq!(
            TlsArgs::of(args(true, true, true).server_files().unwrap().as_ref()),
            args(true, true, true)
        );
    }

    #[test]
    fn a_broken_file_keeps_the_current_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA").unwrap();
        let files = ca.issue(dir.path(), "server").unwrap();
        let tls = Tls::load(&files).unwrap();
        let before = tls.server_config().unwrap();
        let (cert, key) = files.identity.clone().unwrap();
        std::fs::write(&cert, "not a certificate").unwrap();
        let err = format!("{:#}", tls.reload().unwrap_err());
        assert!(err.contains("server.crt"), "{err}");
        assert!(Arc::ptr_eq(&before, &tls.server_config().unwrap()));
        // A key that is not the certificate's is refused too.
        ca.issue(dir.path(), "other").unwrap();
        ca.issue(dir.path(), "server").unwrap();
        std::fs::copy(dir.path().join("other.key"), &key).unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.server_config().unwrap()));
        ca.issue(dir.path(), "server").unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.server_config().unwrap()));
        // Missing files are a clear error at start.
        let missing = TlsFiles::process(&dir.path().join("no.crt"), &key, &files.ca);
        let err = format!("{:#}", Tls::load(&missing).unwrap_err());
        assert!(err.contains("no.crt"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_for_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = Authority::new("test CA")
            .unwrap()
            .issue(dir.path(), "p")
            .unwrap();
        let (_, key) = files.identity.unwrap();
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, generate::KEY_FILE_MODE);
    }
}
