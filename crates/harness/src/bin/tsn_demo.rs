//! `tsn_demo` (`make demo`): the whole system on this machine, in the
//! foreground. It starts the coordinator and every cluster (primary,
//! secondary, sync service) on fixed ports, prints who is where and the
//! client command to use, and on Ctrl-C stops every process it started.

use std::net::TcpListener;
use std::path::PathBuf;

use clap::Parser;
use tsn_cluster::auth::ClusterAuth;
use tsn_cluster::coord::CoordClient;
use tsn_cluster::limits::COORDINATOR_CALL_TIMEOUT_MS;
use tsn_harness::{Config, Deployment, Member};
use tsn_proto::tsn::mp3_directory_client::Mp3DirectoryClient;
use tsn_proto::tsn::{Mp3Listener, Mp3ListenersRequest, ProcessKind, Role};

/// Starts a local tsn deployment in the foreground; Ctrl-C stops it.
#[derive(Parser, Debug)]
#[command(name = "tsn_demo", version)]
struct Args {
    /// Port of the coordinator; server i of cluster c listens on
    /// base + 100 c + i, the sync service of cluster c on base + 100 c + 50.
    #[arg(long, default_value_t = 9000, value_parser = clap::value_parser!(u16).range(1024..=60000))]
    base_port: u16,
    /// Number of clusters.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    clusters: u32,
    /// Secondaries per cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4))]
    secondaries: u32,
    /// The sync services' poll interval, in milliseconds (-q).
    #[arg(short = 'q', long, default_value_t = 500)]
    q_ms: u64,
    /// Coordinator's failure timeout, in milliseconds.
    #[arg(long, default_value_t = tsn_cluster::limits::FAILURE_TIMEOUT_MS)]
    failure_timeout_ms: u64,
    /// Where each run keeps its logs and datastore (a new folder per run).
    #[arg(long, default_value = "run")]
    run_dir: PathBuf,
    /// The cluster secret every process is given; without it, a new one is
    /// generated into the run's folder (copy it to any process started by
    /// hand, or pass --cluster-secret-file to it).
    #[arg(long, value_name = "PATH")]
    cluster_secret_file: Option<PathBuf>,
    /// TLS everywhere: makes a throwaway CA and one certificate per process
    /// (names 127.0.0.1 and localhost) into the run's folder, mutual TLS
    /// between the processes; clients connect with --tls-ca.
    #[arg(long)]
    tls: bool,
    /// Members of the coordinator group (a Raft group; 3 or 5 survive the
    /// loss of 1 or 2); member i listens on base + i - 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=7))]
    coordinators: u32,
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(run(args));
}

fn fail(msg: &str) -> ! {
    eprintln!("tsn_demo: error: {msg}");
    std::process::exit(1);
}

async fn run(args: Args) {
    let mut config = Config::new(args.clusters, args.secondaries, args.q_ms);
    config.failure_timeout_ms = args.failure_timeout_ms;
    config.base_port = Some(args.base_port);
    config.secret_file = args.cluster_secret_file.clone();
    // Every process gets an operator's port (a free one), shown in the table.
    config.admin_ports = true;
    config.tls = args.tls;
    config.coordinators = args.coordinators;
    // Every port must be free before anything starts: a clear error now is
    // better than a half-started deployment.
    let mut members = vec![Member::Coordinator];
    members.extend((2..=args.coordinators).map(|id| Member::GroupMember { id }));
    for c in 1..=args.clusters {
        for i in 1..=1 + args.secondaries {
            members.push(Member::Server {
                cluster: c,
                server_id: i,
            });
        }
        members.push(Member::Sync { cluster: c });
    }
    for m in &members {
        let Some(port) = config.port_of(*m) else {
            continue;
        };
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            fail(&format!(
                "port {port} ({}) is not available: {e}; stop what uses it or pick another --base-port",
                describe(*m)
            ));
        }
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let root = args.run_dir.join(stamp.to_string());
    config.root = Some(root.clone());
    println!(
        "starting tsn: {} coordinator(s) and {} cluster(s) ...",
        args.coordinators, args.clusters
    );
    let mut deployment = Deployment::start_with(config).await;
    let coord_addr = deployment.coord_addr();
    let admin: Vec<(Member, String)> = members
        .iter()
        .filter_map(|&m| deployment.admin_addr(m).map(|a| (m, a)))
        .collect();
    print_table(&coord_addr, deployment.auth(), &admin).await;
    let client = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tsn_client")))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "tsn_client".into());
    println!();
    println!("logs and data:  {}", root.display());
    println!(
        "cluster secret: {} (--cluster-secret-file for processes started by hand)",
        deployment.secret_file().display()
    );
    let tls = deployment
        .client_tls_flags()
        .iter()
        .map(|f| format!(" {f}"))
        .collect::<String>();
    if let Some(files) = deployment.tls() {
        println!(
            "TLS:            on; CA {}, every process's certificate and key in {}",
            files.ca.display(),
            deployment.tls_dir().display()
        );
    }
    println!("client:         {client}{tls} -c {coord_addr} -i <client id>");
    println!("                (scripts: add a command, e.g. `post hello`, `timeline --watch`; --help lists them)");
    println!("MP3 client:     its coordinator address is {coord_addr} (FetchAssignment names the mp3_port)");
    println!();
    println!("running; press Ctrl-C to stop every process");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("tsn_demo: cannot wait for Ctrl-C: {e}");
    }
    println!();
    println!("stopping ...");
    let stopped = deployment.stop_all().await;
    println!(
        "stopped {} process(es); logs and data kept in {}",
        stopped.len(),
        root.display()
    );
    drop(deployment);
}

fn describe(m: Member) -> String {
    match m {
        Member::Coordinator => "coordinator".into(),
        Member::GroupMember { id } => format!("coordinator {id}"),
        Member::Server { cluster, server_id } => format!("server {server_id} of cluster {cluster}"),
        Member::Sync { cluster } => format!("sync service of cluster {cluster}"),
    }
}

/// The clusters as the coordinator sees them, with each process's admin
/// port (`/metrics`, `/admin/status`).
async fn print_table(coord_addr: &str, auth: &ClusterAuth, admin: &[(Member, String)]) {
    let admin_of = |m: Member| {
        admin
            .iter()
            .find(|(member, _)| *member == m)
            .map_or("-".to_string(), |(_, a)| a.clone())
    };
    // The deployment is healthy: the coordinator has heard from everyone.
    let views = match CoordClient::with_auth(coord_addr, auth) {
        Ok(c) => c.clusters().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mp3 = mp3_listeners(coord_addr, auth).await;
    println!();
    println!(
        "{:<8} {:<12} {:<4} {:<22} {:<6} {:>8} {:>8}  admin",
        "cluster", "role", "id", "address", "alive", "last_seq", "mp3_port"
    );
    println!(
        "{:<8} {:<12} {:<4} {:<22} {:<6} {:>8} {:>8}  {}",
        "-",
        "coordinator",
        "-",
        coord_addr,
        "yes",
        "-",
        "-",
        admin_of(Member::Coordinator)
    );
    for c in &views {
        let mut procs = c.processes.clone();
        procs.sort_by_key(|p| (p.kind, p.role, p.server_id));
        for p in procs {
            let role = match (ProcessKind::try_from(p.kind), Role::try_from(p.role)) {
                (Ok(ProcessKind::SyncService), _) => "sync",
                (_, Ok(Role::Primary)) => "primary",
                (_, Ok(Role::Secondary)) => "secondary",
                _ => "?",
            };
            let mp3_port = match ProcessKind::try_from(p.kind) {
                Ok(ProcessKind::Server) => mp3
                    .iter()
                    .find(|l| l.cluster_id == c.cluster_id && l.server_id == p.server_id)
                    .and_then(|l| l.address.rsplit_once(':'))
                    .map_or("?", |(_, port)| port)
                    .to_string(),
                _ => "-".to_string(),
            };
            let member = match ProcessKind::try_from(p.kind) {
                Ok(ProcessKind::SyncService) => Member::Sync {
                    cluster: c.cluster_id,
                },
                _ => Member::Server {
                    cluster: c.cluster_id,
                    server_id: p.server_id,
                },
            };
            println!(
                "{:<8} {:<12} {:<4} {:<22} {:<6} {:>8} {:>8}  {}",
                c.cluster_id,
                role,
                p.server_id,
                p.address,
                if p.alive { "yes" } else { "no" },
                p.last_seq,
                mp3_port,
                admin_of(member)
            );
        }
    }
}

/// Every server's listener for the MP3 variant of the client protocol, as
/// the leading member of the coordinator group knows them.
async fn mp3_listeners(coord_addr: &str, auth: &ClusterAuth) -> Vec<Mp3Listener> {
    for addr in coord_addr.split(',') {
        let Ok(channel) = auth.channel(addr, COORDINATOR_CALL_TIMEOUT_MS) else {
            continue;
        };
        if let Ok(reply) = Mp3DirectoryClient::new(channel)
            .listeners(Mp3ListenersRequest {})
            .await
        {
            return reply.into_inner().listeners;
        }
    }
    Vec::new()
}
