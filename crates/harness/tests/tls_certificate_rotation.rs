//! A certificate replaced on disk takes effect without a restart. While
//! every user posts: a broken certificate file written over the primary's
//! is refused by it (it keeps serving with the old one); then a new
//! certificate and key from the same CA replace the primary's and the
//! coordinator's, and new connections see the new certificates (compared
//! byte for byte with the files). No acknowledged post is lost, the
//! journals stay identical, and the rotated primary still mirrors to its
//! secondary with its new client certificate.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use tsn_cluster::tls::{load_certs, process_tls, server_certificate, CertificateDer, TlsFiles};
use tsn_harness::attack::under_load;
use tsn_harness::{wait_for, Config, Deployment, Member};

use common::{ms, wait_all_in_sync, CONVERGE_DEADLINE_MS, FAILURE_TIMEOUT_MS, Q_MS};

/// Writers: users 1 and 3 on cluster 1, 2 and 4 on cluster 2.
const USERS: [u32; 4] = [1, 2, 3, 4];
/// Posts each writer gets acknowledged before and after the rotation.
const ACKED_AROUND_ROTATION: u64 = 5;
/// How long the broken file is left in place before the check that the
/// old certificate is still served (longer than the watch's debounce and
/// poll).
const BROKEN_FILE_HELD_MS: u64 = 2 * tsn_cluster::watch::WATCH_POLL_INTERVAL_MS;

/// The certificate a new connection to `addr` sees.
async fn seen(addr: &str) -> Result<CertificateDer<'static>, String> {
    let Some(tls) = process_tls() else {
        panic!("the harness has no TLS")
    };
    server_certificate(&tls, addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

fn leaf(files: &TlsFiles) -> CertificateDer<'static> {
    let Some((cert, _)) = &files.identity else {
        panic!("{files:?} has no certificate")
    };
    match load_certs(cert) {
        Ok(c) => c[0].clone(),
        Err(e) => panic!("{e:#}"),
    }
}

async fn wait_serves(addr: &str, want: &CertificateDer<'static>) {
    wait_for(
        ms(CONVERGE_DEADLINE_MS),
        &format!("{addr} to present its new certificate"),
        || async move {
            match seen(addr).await {
                Ok(c) if &c == want => Ok(()),
                Ok(_) => Err("still the old certificate".to_string()),
                Err(e) => Err(e),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificates_are_served_without_a_restart() {
    let mut config = Config::new(2, 1, Q_MS);
    config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
    config.tls = true;
    let d = Deployment::start_with(config).await;
    d.login_all(&USERS).await;
    wait_all_in_sync(&d).await;

    let (d, _) = under_load(
        d,
        &USERS,
        &[],
        ACKED_AROUND_ROTATION,
        ms(CONVERGE_DEADLINE_MS),
        |d| async move {
            let (primary_id, primary) = d.primary_of(1).await;
            let member = Member::Server {
                cluster: 1,
                server_id: primary_id,
            };
            let files = d.member_tls(member);
            let old = leaf(&files);
            assert_eq!(seen(&primary).await, Ok(old.clone()));

            // A broken certificate keeps the old one in use.
            let Some((cert_path, _)) = &files.identity else {
                panic!("no certificate")
            };
            if let Err(e) = tsn_cluster::tls::generate::replace_file(
                cert_path,
                b"-----BEGIN CERTIFICATE-----\nbroken\n",
                0o644,
            ) {
                panic!("{e:#}");
            }
            tokio::time::sleep(ms(BROKEN_FILE_HELD_MS)).await;
            assert_eq!(
                seen(&primary).await,
                Ok(old.clone()),
                "a broken file replaced the served certificate"
            );

            // A new pair of the same CA is served to new connections.
            let rotated = d.rotate_certificate(member);
            let new = leaf(&rotated);
            assert_ne!(new, old);
            wait_serves(&primary, &new).await;
            let coord = d.coord_addr();
            let coord_new = leaf(&d.rotate_certificate(Member::Coordinator));
            wait_serves(&coord, &coord_new).await;
            d
        },
    )
    .await;
    // The rotated primary still mirrors (its new client certificate is
    // accepted by its secondary) and is heard by the coordinator.
    wait_all_in_sync(&d).await;
}
