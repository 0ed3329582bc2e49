//! Internal RPCs authenticate their caller with a deployment secret.
//!
//! Every tsn process of one deployment holds the same secret, read from a
//! file (`--cluster-secret-file`, else a fixed per-user place created on
//! first use: see [`file`]). Each call a process makes to an internal
//! service (`tsn.Coordinator`, `tsn.Replica`, `tsn.Sync`,
//! `tsn.Mp3Directory`) carries the secret in the metadata key
//! [`SECRET_METADATA_KEY`] ([`Attach`]), and each process refuses an
//! internal call without it with `UNAUTHENTICATED` before any handler runs
//! ([`Check`]), so an outsider changes nothing. The client protocols
//! (`SNSService`, `tsn.Posts`, `GetServer`, `FetchAssignment`) carry no
//! credentials and stay open.
//!
//! Rotation: the file is watched ([`crate::watch`]) and looked at every
//! [`SECRET_POLL_INTERVAL_MS`]; a new
//! secret replaces the old one, which stays accepted (and is presented next
//! to the new one) for `--secret-grace-ms`, so that the processes re-reading
//! the file at slightly different times keep talking to each other.
//!
//! The secret never reaches a log: [`Secret`]'s `Debug` is `[redacted]`,
//! errors name the file, not its content, and [`Check`] removes the secret
//! from a request's metadata before the handler sees it.

pub mod file;
pub mod secret;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub use file::{
    create_secret_file, default_secret_path, read_secret_file, replace_secret_file,
    SECRET_FILE_MODE,
};
pub use secret::{Secret, SecretRing, SECRET_BYTES};

use crate::sync::lock;

/// The metadata key that carries the cluster secret (`authorization` is
/// left for users' session tokens).
pub const SECRET_METADATA_KEY: &str = "tsn-cluster-secret";
/// How long the previous secret stays accepted after the file changes, by
/// default (`--secret-grace-ms`).
pub const SECRET_GRACE_MS: u64 = 60_000;
/// Shortest grace period: longer than the poll, so that every process has
/// re-read the file before any stops presenting the old secret.
pub const SECRET_GRACE_MIN_MS: u64 = 2 * SECRET_POLL_INTERVAL_MS;
/// How often a process looks whether its secret file changed.
pub const SECRET_POLL_INTERVAL_MS: u64 = crate::watch::WATCH_POLL_INTERVAL_MS;
/// The services whose every method requires the secret. The test
/// `refused_without_secret` holds every method of each to it.
pub const INTERNAL_SERVICES: [&str; 5] = [
    "tsn.Coordinator",
    "tsn.Raft",
    "tsn.Replica",
    "tsn.Sync",
    "tsn.Mp3Directory",
];

/// The flags every tsn process shares about the secret.
#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    /// File holding the deployment's cluster secret (64 hex digits, mode
    /// 0600); every process of a deployment needs the same one. Without
    /// it: $XDG_CONFIG_HOME/tsn/cluster.secret (else
    /// ~/.config/tsn/cluster.secret), created on first use.
    #[arg(long = "cluster-secret-file", value_name = "PATH")]
    pub cluster_secret_file: Option<PathBuf>,
    /// How long the previous secret stays accepted after the secret file
    /// changes, in milliseconds.
    #[arg(long = "secret-grace-ms", value_name = "MS", default_value_t = SECRET_GRACE_MS,
          value_parser = clap::value_parser!(u64).range(SECRET_GRACE_MIN_MS..))]
    pub secret_grace_ms: u64,
}

impl SecretArgs {
    /// The secret in `path`, with the default grace period.
    pub fn file(path: &Path) -> SecretArgs {
        SecretArgs {
            cluster_secret_file: Some(path.to_path_buf()),
            secret_grace_ms: SECRET_GRACE_MS,
        }
    }
}

/// Internal calls refused for a missing or wrong secret, over the
/// process's life (the operator's `/metrics` shows it).
pub fn refused_calls() -> u64 {
    REFUSED_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

static REFUSED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The refusal every outsider gets (and counts it).
pub fn refusal() -> Status {
    REFUSED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Status::unauthenticated(format!(
        "internal tsn service: the caller must present this deployment's cluster secret \
         (metadata {SECRET_METADATA_KEY}; see --cluster-secret-file)"
    ))
}

/// The refusal of an internal call over TLS from a caller that presented
/// no client certificate: with TLS on, internal callers need both.
pub fn certificate_refusal() -> Status {
    Status::unauthenticated(
        "internal tsn service: over TLS the caller must present a client certificate of this \
         deployment's CA (--tls-cert, --tls-key) as well as the cluster secret",
    )
}

struct Shared {
    ring: Mutex<SecretRing>,
    path: PathBuf,
    grace: Duration,
}

/// The secret of this process, kept up to date with its file. Clones share
/// it; the thread that polls the file ends with the last clone.
#[derive(Clone)]
pub struct ClusterAuth {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth")
            .field("path", &self.shared.path)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl ClusterAuth {
    /// Reads the secret the flags name (the default file is created when
    /// missing; a named one must exist) and starts following its changes.
    /// An unreadable, malformed or too widely readable file is an error.
    pub fn open(args: &SecretArgs) -> anyhow::Result<ClusterAuth> {
        let (path, secret) = match &args.cluster_secret_file {
            Some(path) => (path.clone(), read_secret_file(path)?),
            None => {
                let path = default_secret_path()?;
                let secret = file::load_or_create(&path)?;
                (path, secret)
            }
        };
        let auth = ClusterAuth {
            shared: Arc::new(Shared {
                ring: Mutex::new(SecretRing::new(secret)),
                path,
                grace: Duration::from_millis(args.secret_grace_ms),
            }),
        };
        auth.follow_file()?;
        Ok(auth)
    }

    /// The file this secret comes from.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Follows the file ([`crate::watch`]: its events, and a look every
    /// second) on a thread of its own (a process's runtimes may be busy or
    /// several); the thread ends once every clone is dropped.
    fn follow_file(&self) -> anyhow::Result<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let mut last_error: Option<String> = None;
        let path = self.shared.path.clone();
        crate::watch::follow(
            "cluster-secret",
            vec![path],
            weak,
            move |shared: &Shared| {
                match read_secret_file(&shared.path) {
                    Ok(next) => {
                        last_error = None;
                        let rotated = lock(&shared.ring).rotate(next, Instant::now(), shared.grace);
                        if rotated {
                            tracing::info!(
                                path = %shared.path.display(),
                                grace_ms = shared.grace.as_millis() as u64,
                                "the cluster secret changed; the previous one is \
                                 accepted for the grace period"
                            );
                        }
                        true
                    }
                    Err(e) => {
                        // Kept the current secret; said once per error.
                        let e = format!("{e:#}");
                        if last_error.as_ref() != Some(&e) {
                            tracing::warn!(error = %e, "keeping the current cluster secret");
                            last_error = Some(e);
                        }
                        false
                    }
                }
            },
        )
    }

    /// Re-reads the file now (what the poll does), rotating at `now`.
    pub fn reload(&self, now: Instant) -> anyhow::Result<bool> {
        let next = read_secret_file(&self.shared.path)?;
        Ok(lock(&self.shared.ring).rotate(next, now, self.shared.grace))
    }

    /// Whether `request` presents an accepted secret at `now`.
    fn accepts<T>(&self, request: &Request<T>, now: Instant) -> bool {
        let ring = lock(&self.shared.ring);
        let mut ok = false;
        for value in request.metadata().get_all(SECRET_METADATA_KEY) {
            if let Ok(Ok(secret)) = value.to_str().map(Secret::parse) {
                ok |= ring.accepts(&secret, now);
            }
        }
        ok
    }

    /// The interceptor that puts the secret on outgoing calls.
    pub fn attach(&self) -> Attach {
        Attach(Some(self.clone()))
    }

    /// The interceptor that refuses incoming calls without the secret.
    pub fn check(&self) -> Check {
        Check(self.clone())
    }

    /// `service` behind [`Check`]: what every internal service is served as.
    pub fn guard<S>(&self, service: S) -> InterceptedService<S, Check> {
        InterceptedService::new(service, self.check())
    }

    /// A lazily connected channel to `addr` whose calls carry the secret
    /// and time out after `timeout_ms` (see [`crate::coord::channel`]).
    pub fn channel(&self, addr: &str, timeout_ms: u64) -> anyhow::Result<AuthChannel> {
        Ok(self.wrap(crate::coord::channel(addr, timeout_ms)?))
    }

    /// `channel` with the secret on every call.
    pub fn wrap(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.attach())
    }
}

/// A channel whose calls carry the secret.
pub type AuthChannel = InterceptedService<Channel, Attach>;

/// Puts the secret (and, during a rotation's grace period, the previous
/// one) on every outgoing call; without a secret it adds nothing (a client
/// of the open services).
#[derive(Clone, Debug, Default)]
pub struct Attach(Option<ClusterAuth>);

impl Attach {
    /// Adds nothing: for the open services only.
    pub fn none() -> Attach {
        Attach(None)
    }
}

impl Interceptor for Attach {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(auth) = &self.0 else {
            return Ok(request);
        };
        let presented = lock(&auth.shared.ring).presented(Instant::now());
        for secret in presented {
            match MetadataValue::try_from(secret.to_hex()) {
                Ok(v) => {
                    request.metadata_mut().append(SECRET_METADATA_KEY, v);
                }
                Err(_) => return Err(Status::internal("the cluster secret is not ASCII")),
            }
        }
        Ok(request)
    }
}

/// Refuses a call that does not present an accepted secret, or that came
/// over TLS without a client certificate, with `UNAUTHENTICATED`, before
/// its handler runs; removes the secret from an
/// accepted call's metadata.
#[derive(Clone, Debug)]
pub struct Check(ClusterAuth);

impl Interceptor for Check {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(info) = crate::net::ConnInfo::of(&request) {
            if info.tls && !info.client_certificate {
                return Err(certificate_refusal());
            }
        }
        if !self.0.accepts(&request, Instant::now()) {
            return Err(refusal());
        }
        // A connection taken into the internal reserve keeps its slot.
        if let Some(r) = crate::net::ConnInfo::of(&request).and_then(|i| i.reserved.as_ref()) {
            r.prove();
        }
        request.metadata_mut().remove(SECRET_METADATA_KEY);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_in(dir: &Path, grace_ms: u64) -> ClusterAuth {
        let path = dir.join("cluster.secret");
        create_secret_file(&path).unwrap();
        ClusterAuth::open(&SecretArgs {
            cluster_secret_file: Some(path),
            secret_grace_ms: grace_ms,
        })
        .unwrap()
    }

    fn with_values(values: &[&str]) -> Request<()> {
        let mut r = Request::new(());
        for v in values {
            r.metadata_mut()
                .append(SECRET_METADATA_KEY, MetadataValue::try_from(*v).unwrap());
        }
        r
    }

    #[test]
    fn attached_secret_passes_the_check_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth_in(dir.path(), SECRET_GRACE_MS);
        let sent = auth.attach().call(Request::new(())).unwrap();
        let passed = auth.check().call(sent).unwrap();
        assert!(passed.metadata().get(SECRET_METADATA_KEY).is_none());
    }

    #[test]
    fn missing_wrong_or_garbled_secrets_are_unauthenticated() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth_in(dir.path(), SECRET_GRACE_MS);
        let other = Secret::generate().unwrap().to_hex();
        for values in [vec![], vec![other.as_str()], vec!["nonsense"], vec![""]] {
            let err = auth.check().call(with_values(&values)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(err.message().contains(SECRET_METADATA_KEY));
        }
        let none = Attach::none().call(Request::new(())).unwrap();
        assert_eq!(
            auth.check().call(none).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_rotation_is_followed_with_grace() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth_in(dir.path(), SECRET_GRACE_MIN_MS);
        let old = auth.attach().call(Request::new(())).unwrap();
        let old_hex = old.metadata().get(SECRET_METADATA_KEY).unwrap().clone();
        let next = Secret::generate().unwrap();
        replace_secret_file(auth.path(), &next).unwrap();
        let t = Instant::now();
        assert!(auth.reload(t).unwrap());
        assert!(!auth.reload(t).unwrap(), "unchanged file");
        // Both are presented and both accepted during the grace period.
        let sent = auth.attach().call(Request::new(())).unwrap();
        assert_eq!(
            sent.metadata().get_all(SECRET_METADATA_KEY).iter().count(),
            2
        );
        let mut old_only = Request::new(());
        old_only
            .metadata_mut()
            .insert(SECRET_METADATA_KEY, old_hex.clone());
        assert!(auth.accepts(&old_only, t));
        assert!(auth.accepts(&with_values(&[&next.to_hex()]), t));
        let later = t + Duration::from_millis(SECRET_GRACE_MIN_MS);
        assert!(!auth.accepts(&old_only, later));
        assert!(auth.accepts(&with_values(&[&next.to_hex()]), later));
        // A malformed file keeps the current secret.
        std::fs::write(auth.path(), "garbage").unwrap();
        assert!(auth.reload(later).is_err());
        assert!(auth.accepts(&with_values(&[&next.to_hex()]), later));
    }

    #[test]
    fn a_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClusterAuth::open(&SecretArgs::file(&dir.path().join("none"))).unwrap_err();
        assert!(err.to_string().contains("cannot read the cluster secret"));
    }
}
