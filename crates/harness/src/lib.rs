//! The end-to-end test harness of tsn: it starts the real binaries, kills
//! and restarts them, and talks to them as users do.
//!
//! * [`deployment`]: a whole deployment (coordinator, clusters of servers,
//!   sync services) in a temp dir, with waits for its health and for
//!   replicated state to converge.
//! * [`proc`]: one child process: logs, SIGKILL, SIGTERM, SIGSTOP/SIGCONT,
//!   restart with the same arguments, never left running.
//! * [`api`] and [`stream`]: the gRPC API, routed and retried by the
//!   `tsn_client` library as every client is.
//! * [`cli`]: `tsn_client` runs and interactive sessions.
//! * [`wait`]: polling a condition with a deadline (never a fixed sleep).
//! * [`results`]: pure helpers to read what a test got (ids, texts, the
//!   client's output, the datastore's files).
//! * [`attack`]: running an attack on a deployment while its users post,
//!   and what such tests share (the processes' addresses, files holding a
//!   marker).
//! * [`fault_check`]: after a run of faults, every timeline held to what
//!   the writers were told and the replicas' journals compared.
//! * [`direct`] and [`classic`]: clients of one given process, and the
//!   client that speaks only the classic protocol.
//! * [`netns`]: a test network of real namespaces, one per host, and its
//!   nemesis (links cut and healed, one way or both).
//! * [`views`] and [`trace`]: pure reads of the coordinator's view, and
//!   traces of refused writes in a datastore.
//! * [`bins`], [`port`], [`logs`], [`limits`]: where the binaries are, free
//!   ports, log tails, and every limit of the harness.
//!
//! The tests themselves are in `tests/`.

pub mod api;
pub mod attack;
pub mod bins;
pub mod chaos;
pub mod classic;
pub mod cli;
pub mod deployment;
pub mod direct;
pub mod fault_check;
pub mod limits;
pub mod load;
pub mod logs;
pub mod netns;
pub mod port;
pub mod proc;
pub mod results;
pub mod stream;
pub mod trace;
pub mod views;
pub mod wait;

pub use api::{Api, Listing};
pub use cli::{run_client, run_client_with_stdin, InteractiveClient};
pub use deployment::{Config, Deployment, Member};
pub use port::free_port;
pub use proc::{Proc, ProcSpec, Ready};
pub use stream::{Recorder, TimelineStream};
pub use wait::{wait_for, wait_until};
