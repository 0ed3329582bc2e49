//! `tsn_client`: the tsn client.
//!
//! Without a command it is an interactive session like the classic Tiny SNS
//! client; with one (`follow`, `unfollow`, `list`, `post`, `timeline`,
//! `signup`) it runs it and exits, for scripts. The user is a client id
//! (`-i 4`) or an account's handle (`-u alice`), which the coordinator
//! resolves to its id. Either way it finds the primary of the
//! user's cluster through the coordinator and fails over by itself, and it
//! first re-sends any post an earlier run left unacknowledged.
//!
//! Exit status: 0 on success; 1 with one line `error: <reason>` on stderr
//! when the command failed; 2 for bad command-line usage; 130 when a
//! one-shot command was interrupted by a signal.

mod display;
mod follow;
mod ids;
mod input;
mod interactive;
mod line_editor;
mod line_reader;
mod list;
mod login;
mod output;
mod password;
mod post;
mod signup;
mod timeline;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};
use tsn_client::limits::{
    RETRY_FOR_MS_DEFAULT, RETRY_FOR_MS_MAX, TIMELINE_LIMIT_DEFAULT, TIMELINE_LIMIT_MAX,
    WATCH_DURATION_MS_MAX,
};
use tsn_client::pending::PendingStore;
use tsn_client::{post_text, reply, user_policy, user_router};
use tsn_cluster::coord::CoordClient;
use tsn_cluster::shutdown::Shutdown;
use tsn_datastore::handle::{Handle, Pattern};

use crate::follow::Relation;
use crate::output::Output;

const EXIT_FAILURE: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_INTERRUPTED: i32 = 130;
/// Worker threads of the runtime: the client waits on the network and
/// stdin, it does not compute.
const RUNTIME_WORKER_THREADS: usize = 2;

#[derive(Parser, Debug)]
#[command(
    name = "tsn_client",
    version,
    about = "The tsn client: interactive without a command, scriptable with one. \
             Finds the primary of your cluster through the coordinator and fails over by itself."
)]
struct Cli {
    /// Address of the coordinator, as host:port, or of every member of the
    /// coordinator group, host:port,host:port,...
    #[arg(
        short = 'c',
        long = "coordinator",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    coordinator: String,

    /// Your client id: a positive integer (or give your handle with -u).
    #[arg(
        short = 'i',
        long = "id",
        value_name = "ID",
        allow_hyphen_values = true,
        conflicts_with = "handle"
    )]
    id: Option<String>,

    /// Your account's handle (instead of -i).
    #[arg(short = 'u', long = "user", value_name = "HANDLE")]
    handle: Option<String>,

    /// The classic client's own port: accepted so that the classic command
    /// lines (`tsn_client -c <coordIP>:<coordPort> -p <clientPort> -i
    /// <clientID>`) work as written, and ignored: tsn's client calls out
    /// to the servers and listens on no port of its own.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,

    /// Interactive, as an account: end the account's other interactive
    /// session instead of being refused while it is online.
    #[arg(long)]
    take_over: bool,

    /// Print one JSON object per line on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Directory of the pending-post state files [default:
    /// $XDG_STATE_HOME/tsn_client, else $HOME/.local/state/tsn_client,
    /// else ./.tsn_client].
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// How long a command keeps retrying through a failover before it gives
    /// up, in milliseconds.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        default_value_t = RETRY_FOR_MS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(0..=RETRY_FOR_MS_MAX)
    )]
    retry_for_ms: u64,

    /// TLS (`--tls-ca` verifies the servers; `--tls-cert` and
    /// `--tls-key` present a certificate of your own, optional).
    #[command(flatten)]
    tls: tsn_cluster::tls::TlsArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Follow user ID (or the account HANDLE).
    Follow {
        /// The user to follow: an id or a handle.
        #[arg(value_name = "ID", allow_hyphen_values = true)]
        target: String,
    },
    /// Stop following user ID (or the account HANDLE).
    Unfollow {
        /// The user to stop following: an id or a handle.
        #[arg(value_name = "ID", allow_hyphen_values = true)]
        target: String,
    },
    /// Show every user and your followers; with PATTERN, the accounts
    /// whose handle matches it (`*` any run, `?` any one character).
    List {
        /// A glob over handles.
        #[arg(value_name = "PATTERN")]
        pattern: Option<String>,
    },
    /// Post a message: the words of TEXT joined by one space (put flags
    /// before the text).
    Post {
        /// The words of the post.
        #[arg(
            value_name = "TEXT",
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        words: Vec<String>,
    },
    /// Show your timeline, newest first; with --watch, keep showing new
    /// posts as they arrive.
    Timeline {
        /// How many posts to show (without --watch).
        #[arg(
            long,
            value_name = "N",
            default_value_t = TIMELINE_LIMIT_DEFAULT,
            value_parser = clap::value_parser!(u32).range(1..=TIMELINE_LIMIT_MAX as i64)
        )]
        limit: u32,
        /// Keep the timeline open: show the newest posts, then each new one,
        /// reconnecting through failovers without repeating or skipping any.
        #[arg(long)]
        watch: bool,
        /// With --watch: exit after showing N posts.
        #[arg(
            long,
            value_name = "N",
            requires = "watch",
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        max_posts: Option<u64>,
        /// With --watch: exit after MS milliseconds.
        #[arg(
            long,
            value_name = "MS",
            requires = "watch",
            value_parser = clap::value_parser!(u64).range(1..=WATCH_DURATION_MS_MAX)
        )]
        duration_ms: Option<u64>,
    },
    /// Log in to your account (-u HANDLE): asks for the password at the
    /// terminal, without echo, and keeps the session token in the state
    /// directory for later commands.
    Login {
        /// Read the password from the first line of stdin instead.
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the session of your account, here and on tsn.
    Logout,
    /// Create an account: a handle unique across tsn and a new client id.
    /// Asks for the password at the terminal, without echo.
    Signup {
        /// 1-30 letters a-z, digits and '_' (not digits only), in any case.
        #[arg(value_name = "HANDLE")]
        handle: String,
        /// Read the password from the first line of stdin instead.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// What to do, with every argument checked: nothing invalid gets this far.
enum Action {
    Interactive,
    Relation(Relation, ids::Target),
    List,
    ListAccounts(Pattern),
    Post(String),
    Read {
        limit: u32,
    },
    Watch {
        max_posts: Option<u64>,
        duration: Option<Duration>,
    },
    SignUp(Handle, password::Source),
    LogIn(password::Source),
    LogOut,
}

impl Action {
    fn from_command(command: Option<Command>) -> anyhow::Result<Action> {
        Ok(match command {
            None => Action::Interactive,
            Some(Command::Follow { target }) => Action::Relation(
                Relation::Follow,
                ids::parse_target(&target).map_err(anyhow::Error::msg)?,
            ),
            Some(Command::Unfollow { target }) => Action::Relation(
                Relation::Unfollow,
                ids::parse_target(&target).map_err(anyhow::Error::msg)?,
            ),
            Some(Command::List { pattern: None }) => Action::List,
            Some(Command::List {
                pattern: Some(pattern),
            }) => Action::ListAccounts(Pattern::parse(&pattern).map_err(anyhow::Error::msg)?),
            Some(Command::Post { words }) => {
                let text = words.join(" ");
                post_text::validate(&text).map_err(anyhow::Error::msg)?;
                Action::Post(text)
            }
            Some(Command::Timeline {
                limit,
                watch: false,
                ..
            }) => Action::Read { limit },
            Some(Command::Timeline {
                watch: true,
                max_posts,
                duration_ms,
                ..
            }) => Action::Watch {
                max_posts,
                duration: duration_ms.map(Duration::from_millis),
            },
            Some(Command::Login { password_stdin }) => Action::LogIn(if password_stdin {
                password::Source::Stdin
            } else {
                password::Source::Terminal
            }),
            Some(Command::Logout) => Action::LogOut,
            Some(Command::Signup {
                handle,
                password_stdin,
            }) => Action::SignUp(
                Handle::parse(&handle).map_err(anyhow::Error::msg)?,
                if password_stdin {
                    password::Source::Stdin
                } else {
                    password::Source::Terminal
                },
            ),
        })
    }

    /// Whether it acts as a user (and needs -i or -u).
    fn needs_user(&self) -> bool {
        !matches!(self, Action::SignUp(..) | Action::ListAccounts(_))
    }

    /// Whether a signal is the normal way to end it (exit 0), rather than
    /// an interruption of a command that did not finish.
    fn ends_by_signal(&self) -> bool {
        matches!(self, Action::Interactive | Action::Watch { .. })
    }
}

/// The log level when `RUST_LOG` does not say: the client's stderr belongs
/// to its user (one `error:` line on failure), so only warnings are logged.
const LOG_LEVEL_DEFAULT: &str = "warn";

fn main() {
    tsn_cluster::init_logging_with_default(LOG_LEVEL_DEFAULT);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                let _ = error.print();
                std::process::exit(0);
            }
            _ => {
                eprintln!("error: {}", clap_reason(&error));
                std::process::exit(EXIT_USAGE);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKER_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(run(cli));
    // Reading stdin blocks a thread that cannot be cancelled; exiting
    // without waiting for it keeps EXIT and signals immediate.
    runtime.shutdown_background();
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let mut shutdown = Shutdown::on_signals();
    let (action, prepared) = match prepare(cli) {
        Ok(ready) => ready,
        Err(error) => return fail(&error),
    };
    let quiet_on_signal = action.ends_by_signal();
    tokio::select! {
        result = execute(action, prepared) => match result {
            Ok(()) => 0,
            Err(error) => fail(&error),
        },
        _ = shutdown.wait() => {
            if quiet_on_signal {
                0
            } else {
                eprintln!("error: interrupted");
                EXIT_INTERRUPTED
            }
        }
    }
}

/// Who the client acts as.
enum Who {
    /// No one (`signup`).
    Nobody,
    Id(u32),
    /// An account's handle, resolved at the coordinator.
    Handle(Handle),
}

/// Everything checked before anything is sent or stored.
struct Prepared {
    coord: CoordClient,
    who: Who,
    state_dir: PathBuf,
    out: Output,
    retry_for: Duration,
    take_over: bool,
}

fn prepare(cli: Cli) -> anyhow::Result<(Action, Prepared)> {
    let action = Action::from_command(cli.command)?;
    let who = match (cli.id, cli.handle) {
        (Some(id), _) => Who::Id(ids::parse_id(&id, "client id").map_err(anyhow::Error::msg)?),
        (None, Some(handle)) => Who::Handle(Handle::parse(&handle).map_err(anyhow::Error::msg)?),
        (None, None) if action.needs_user() => {
            bail!("say who you are: -i <client id> or -u <handle>")
        }
        (None, None) => Who::Nobody,
    };
    if let Some(port) = cli.port {
        tracing::debug!(port, "the classic client port is not used");
    }
    if let Some(tls) = cli.tls.open_client()? {
        tsn_cluster::tls::set_process_tls(Some(tls));
    }
    let coord =
        CoordClient::new(&cli.coordinator).map_err(|e| anyhow!("bad coordinator address: {e}"))?;
    let prepared = Prepared {
        coord,
        who,
        state_dir: cli.state_dir.unwrap_or_else(default_state_dir),
        out: Output::new(cli.json),
        retry_for: Duration::from_millis(cli.retry_for_ms),
        take_over: cli.take_over,
    };
    Ok((action, prepared))
}

async fn execute(action: Action, p: Prepared) -> anyhow::Result<()> {
    if let Action::ListAccounts(pattern) = &action {
        let reply = list::accounts(&p.coord, pattern).await?;
        list::print_accounts(&p.out, &reply)?;
        return Ok(());
    }
    if let Action::SignUp(handle, source) = &action {
        let password = password::read(*source, true)?;
        let reply = signup::run(&p.coord, handle, &password).await?;
        signup::print(&p.out, &reply)?;
        // Logged in at once: the account's cluster learns of it now, and
        // from then on its id refuses calls without the token.
        let policy = user_policy(Some(p.retry_for));
        let session = login::log_in(&p.coord, reply.user, &password, &policy).await?;
        tsn_client::session::save(&p.state_dir, &session)
            .map_err(|e| anyhow!("cannot keep the session in {}: {e}", p.state_dir.display()))?;
        login::print_logged_in(&p.out, &session.handle, reply.user, reply.cluster)?;
        return Ok(());
    }
    let user = match &p.who {
        Who::Id(id) => *id,
        Who::Handle(handle) => resolve(&p.coord, handle).await?,
        Who::Nobody => bail!("say who you are: -i <client id> or -u <handle>"),
    };
    let policy = user_policy(Some(p.retry_for));
    if let Action::LogIn(source) = &action {
        let password = password::read(*source, false)?;
        let session = login::log_in(&p.coord, user, &password, &policy).await?;
        tsn_client::session::save(&p.state_dir, &session)
            .map_err(|e| anyhow!("cannot keep the session in {}: {e}", p.state_dir.display()))?;
        let info = p.coord.get_server(user).await;
        let cluster = info.map(|i| i.cluster_id as u32).unwrap_or(0);
        login::print_logged_in(&p.out, &session.handle, user, cluster)?;
        return Ok(());
    }
    let store = PendingStore::open(&p.state_dir, user)?;
    let router = user_router(p.coord);
    // A saved session of this user: every call carries its token.
    let mut handle = match &p.who {
        Who::Handle(h) => Some(h.as_str().to_string()),
        _ => None,
    };
    let mut has_session = false;
    match tsn_client::session::load(&p.state_dir, user, tsn_datastore::record::now_ms()) {
        Ok(Some(session)) => {
            router.set_token(Some(&session.token))?;
            handle = Some(session.handle);
            has_session = true;
        }
        Ok(None) => {}
        Err(why) => eprintln!("warning: {why}"),
    }
    let resent = tsn_client::post::resend_pending(&router, user, &store, &policy).await?;
    for (post_id, error) in &resent.dropped {
        eprintln!("warning: dropped pending post {post_id}: {error}");
    }
    if resent.acknowledged > 0 {
        eprintln!("resent {} pending post(s)", resent.acknowledged);
    }
    let out = p.out;
    match action {
        Action::Interactive => {
            // One interactive session of an account at a time.
            if has_session {
                login::attach_interactive(&router, user, &p.state_dir, p.take_over, &policy)
                    .await?;
            }
            interactive::log_in(&router, user, handle.as_deref(), out, &policy).await?;
            interactive::run(&router, user, &store, out, &policy).await
        }
        Action::Relation(relation, target) => {
            let target = match router.coord() {
                Some(coord) => ids::resolve(coord, &target).await?,
                None => bail!("no coordinator to look up {target:?}"),
            };
            let answer = follow::run(&router, user, relation, target, &policy).await?;
            let success = reply::is_success(&answer);
            // A failure is said once, on stderr; scripts reading --json
            // still get the reply code on stdout.
            if success || out.json() {
                follow::print(&out, relation, target, &answer)?;
            }
            if !success {
                bail!("{}", reply::describe(&answer));
            }
            Ok(())
        }
        Action::List => {
            let answer = list::run(&router, user, &policy).await?;
            list::print(&out, &answer)?;
            Ok(())
        }
        Action::Post(text) => {
            let (post_id, answer) =
                tsn_client::post::post(&router, user, &store, &text, &policy).await?;
            post::print(&out, &post_id, &answer)?;
            Ok(())
        }
        Action::Read { limit } => {
            let posts = timeline::read(&router, user, limit, &policy).await?;
            timeline::print(&out, &posts)?;
            Ok(())
        }
        Action::SignUp(..) | Action::LogIn(_) | Action::ListAccounts(_) => Ok(()),
        Action::LogOut => {
            login::log_out(&router, user, &policy).await?;
            tsn_client::session::remove(&p.state_dir, user)?;
            if out.json() {
                out.json_line(&serde_json::json!({"logged_out": user}))?;
            } else {
                out.line("logged out")?;
            }
            Ok(())
        }
        Action::Watch {
            max_posts,
            duration,
        } => {
            let watching = timeline::watch(router, user, out, max_posts);
            match duration {
                None => watching.await,
                Some(duration) => tokio::time::timeout(duration, watching)
                    .await
                    .unwrap_or(Ok(())),
            }
        }
    }
}

/// The client id of the account `handle`.
async fn resolve(coord: &CoordClient, handle: &Handle) -> anyhow::Result<u32> {
    match coord.resolve(handle.as_str()).await {
        Ok(account) => Ok(account.user),
        Err(status) if status.code() == tonic::Code::NotFound => {
            bail!("no account {handle}")
        }
        Err(status) => bail!("cannot look up {handle}: {}", status.message()),
    }
}

/// Prints the one `error:` line and gives the exit status.
fn fail(error: &anyhow::Error) -> i32 {
    eprintln!("error: {}", one_line(&format!("{error:#}")));
    EXIT_FAILURE
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The reason of a command-line error on one line: clap's message without
/// its `error:` prefix and usage block.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let reason = rendered.split("\n\n").next().unwrap_or("");
    let reason = reason.trim().strip_prefix("error:").unwrap_or(reason);
    let reason = one_line(reason);
    if reason.is_empty() {
        "bad command line; see --help".to_string()
    } else {
        reason
    }
}

/// `$XDG_STATE_HOME/tsn_client`, else `$HOME/.local/state/tsn_client`, else
/// `./.tsn_client`. A relative `XDG_STATE_HOME` is ignored, as the XDG
/// specification asks.
fn default_state_dir() -> PathBuf {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("tsn_client");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local").join("state").join("tsn_client");
    }
    PathBuf::from(".tsn_client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tsn_client").chain(args.iter().copied()))
    }

    #[test]
    fn post_words_are_joined_by_one_space() {
        let cli = parse(&["-c", "h:1", "-i", "3", "post", "hello", "-big", "world"]).unwrap();
        let Ok(Action::Post(text)) = Action::from_command(cli.command) else {
            panic!("not a post");
        };
        assert_eq!(text, "hello -big world");
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_sent() {
        let cli = parse(&["-c", "h:1", "-i", "3", "follow", "-2"]).unwrap();
        assert!(Action::from_command(cli.command).is_err());
        let cli = parse(&["-c", "h:1", "-i", "3", "post", "   "]).unwrap();
        assert!(Action::from_command(cli.command).is_err());
        let long = "x".repeat(1025);
        let cli = parse(&["-c", "h:1", "-i", "3", "post", &long]).unwrap();
        let err = Action::from_command(cli.command).err().unwrap();
        assert_eq!(err.to_string(), "post is longer than 1024 bytes");
        let cli = parse(&["-c", "h:1", "-i", "x"]).unwrap();
        assert!(prepare(cli).is_err());
        let cli = parse(&["-c", "h:1", "-u", "no-dash", "list"]).unwrap();
        assert!(prepare(cli).is_err());
        let cli = parse(&["-c", "h:1", "list"]).unwrap();
        let err = prepare(cli).err().unwrap().to_string();
        assert!(err.contains("-u <handle>"), "{err}");
        assert!(parse(&["-c", "h:1", "-i", "3", "-u", "alice", "list"]).is_err());
    }

    /// A runtime: `prepare` makes the coordinator's lazy channel.
    #[tokio::test]
    async fn signup_needs_no_user_and_a_valid_handle() {
        let cli = parse(&["-c", "h:1", "signup", "Alice", "--password-stdin"]).unwrap();
        let (action, prepared) = prepare(cli).unwrap();
        let Action::SignUp(handle, password::Source::Stdin) = action else {
            panic!("not a sign-up from stdin");
        };
        assert_eq!(handle.as_str(), "alice");
        assert!(matches!(prepared.who, Who::Nobody));
        let cli = parse(&["-c", "h:1", "signup", "12"]).unwrap();
        assert!(prepare(cli).is_err());
        let cli = parse(&["-c", "h:1", "signup", "bob"]).unwrap();
        assert!(matches!(
            prepare(cli).unwrap().0,
            Action::SignUp(_, password::Source::Terminal)
        ));
    }

    #[test]
    fn clap_errors_become_one_line() {
        let err = parse(&["-i", "3"]).unwrap_err();
        let reason = clap_reason(&err);
        assert!(!reason.contains('\n'));
        assert!(reason.contains("--coordinator"), "{reason}");
        let err = parse(&["-c", "h:1", "-i", "3", "timeline", "--limit", "0"]).unwrap_err();
        assert!(clap_reason(&err).contains("--limit"));
        assert!(parse(&["-c", "h:1", "-i", "3", "timeline", "--max-posts", "2"]).is_err());
        assert!(parse(&[
            "-c",
            "h:1",
            "-i",
            "3",
            "--json",
            "timeline",
            "--watch",
            "--max-posts",
            "2"
        ])
        .is_ok());
        assert!(parse(&[
            "-c",
            "h:1",
            "-i",
            "3",
            "list",
            "--json",
            "--retry-for-ms",
            "5"
        ])
        .is_ok());
    }
}
