//! Accounts protect their ids: once an account has a password, every call
//! acting as it needs the token of a live session, and a call without one,
//! with a wrong one or with a logged-out one is refused with
//! `UNAUTHENTICATED` and stores nothing anywhere (checked in every file of
//! every server). A session survives a `kill -9` of the client (the next
//! run uses the saved token) and of the primary (the promoted secondary
//! has the session in its journal). Ids that never signed up work as
//! before.
//!
//! Build the binaries first: `cargo build --bins`.

mod common;

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::Code;
use tsn_harness::attack::files_holding;
use tsn_harness::direct::{post_request, posts_client, request, sessions_client, sns_client};
use tsn_harness::{run_client_with_stdin, Deployment, InteractiveClient};
use tsn_proto::csce438::Message;
use tsn_proto::tsn::{AttachRequest, LoginRequest, LogoutRequest};

use common::{ready_for_failover, start};

/// How long an interactive client may take to show its first line.
const CLIENT_START_DEADLINE_MS: u64 = 30_000;

/// `tsn_client` runs against one deployment, with its state directory.
struct Client {
    coord: String,
    state: String,
}

impl Client {
    fn of(d: &Deployment) -> Client {
        Client {
            coord: d.coord_addr(),
            state: d.client_state_dir().display().to_string(),
        }
    }

    async fn run(&self, rest: &[&str], input: &str) -> (i32, String, String) {
        let mut args = vec!["-c", &self.coord, "--state-dir", &self.state];
        args.extend_from_slice(rest);
        run_client_with_stdin(&args, input).await
    }

    /// Runs, expecting exit 0; returns stdout.
    async fn ok(&self, rest: &[&str], input: &str) -> String {
        let (code, out, err) = self.run(rest, input).await;
        assert_eq!(code, 0, "tsn_client {rest:?}: {out}{err}");
        out
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    match MetadataValue::try_from(format!("Bearer {token}")) {
        Ok(v) => {
            req.metadata_mut().insert("authorization", v);
        }
        Err(e) => panic!("{e}"),
    }
    req
}

fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) {
    match result {
        Ok(reply) => panic!("{what} was accepted: {reply:?}"),
        Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s}"),
    }
}

/// The token the client saved for `user`.
fn saved_token(d: &Deployment, user: u32) -> String {
    let path = d.client_state_dir().join(format!("{user}.session"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    match v["token"].as_str() {
        Some(t) => t.to_string(),
        None => panic!("no token in {text}"),
    }
}

/// Every way to act as a claimed id without its token is refused, and
/// nothing of it is stored on any server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_id_refuses_every_call_without_its_token() {
    let d = start(2, 1).await;
    d.login_all(&[1, 2]).await;
    let c = Client::of(&d);
    // alice is id 3, on cluster 1; signing up logs her in.
    let out = c
        .ok(&["signup", "alice", "--password-stdin"], "pw of alice\n")
        .await;
    assert!(
        out.contains("logged in as alice (id 3) on cluster 1"),
        "{out}"
    );
    let path = d.client_state_dir().join("3.session");
    let mode = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o600));
    let token = saved_token(&d, 3);
    c.ok(&["-u", "alice", "post", "alice", "first"], "").await;
    c.ok(&["-u", "alice", "follow", "1"], "").await;

    let (_, primary) = d.primary_of(1).await;
    let marker = "IMPERSONATED";
    // The classic protocol carries no token: a classic client acting as 3.
    let mut sns = sns_client(&primary);
    refused("classic Login as 3", sns.login(request(3, &[])).await);
    refused("classic List as 3", sns.list(request(3, &[])).await);
    refused("classic Follow as 3", sns.follow(request(3, &["2"])).await);
    refused(
        "classic UnFollow as 3",
        sns.un_follow(request(3, &["1"])).await,
    );
    let hello = Message {
        username: "3".into(),
        msg: marker.into(),
        ..Default::default()
    };
    let opened = sns.timeline(tokio_stream::iter(vec![hello])).await;
    match opened {
        Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{s}"),
        Ok(stream) => {
            // The refusal may come as the stream's first item.
            let first = stream.into_inner().next().await;
            assert!(
                matches!(&first, Some(Err(s)) if s.code() == Code::Unauthenticated),
                "classic Timeline as 3: {first:?}"
            );
        }
    }
    // tsn.Posts without a token, with a wrong one, with a logged-out one.
    let mut posts = posts_client(&primary);
    refused(
        "Posts.Post without a token",
        posts.post(post_request(3, "3-a", marker)).await,
    );
    refused(
        "Posts.Post with a wrong token",
        posts
            .post(with_token(post_request(3, "3-b", marker), &"0".repeat(64)))
            .await,
    );
    refused(
        "Posts.Read without a token",
        posts
            .read(tsn_proto::tsn::ReadRequest { user: 3, limit: 5 })
            .await,
    );
    // The right token works, on the raw API too.
    match posts
        .post(with_token(post_request(3, "3-c", "with token"), &token))
        .await
    {
        Ok(_) => {}
        Err(s) => panic!("Posts.Post with the token: {s}"),
    }
    let out = c.ok(&["-u", "alice", "logout"], "").await;
    assert!(out.contains("logged out"), "{out}");
    assert!(!path.exists(), "the session file is gone");
    refused(
        "Posts.Post with a logged-out token",
        posts
            .post(with_token(post_request(3, "3-d", marker), &token))
            .await,
    );
    let mut sessions = sessions_client(&primary);
    refused(
        "Sessions.Logout with a logged-out token",
        sessions
            .logout(with_token(LogoutRequest { user: 3 }, &token))
            .await,
    );
    refused(
        "Sessions.Attach without a token",
        sessions
            .attach(AttachRequest {
                user: 3,
                session_id: "ab".into(),
                take_over: true,
            })
            .await,
    );
    match sessions
        .attach(with_token(
            AttachRequest {
                user: 3,
                session_id: String::new(),
                take_over: false,
            },
            &token,
        ))
        .await
    {
        Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{s}"),
        Ok(r) => panic!("Sessions.Attach without a session id: {r:?}"),
    }
    refused(
        "Sessions.Logout without a token",
        sessions.logout(LogoutRequest { user: 3 }).await,
    );
    refused(
        "Sessions.Login with a wrong password",
        sessions
            .login(LoginRequest {
                user: 3,
                password: "not it".into(),
            })
            .await,
    );
    refused(
        "Sessions.Login of an id without an account",
        sessions
            .login(LoginRequest {
                user: 1,
                password: "pw".into(),
            })
            .await,
    );
    // The client without a session is refused too, with one clear line.
    let (code, _, err) = c.run(&["-u", "alice", "post", marker], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("log in"), "{err}");
    // Nothing of any refused call is stored on any server.
    let stored = files_holding(&d.datastore_root(), marker);
    assert!(stored.is_empty(), "{stored:?}");
    // An id that never signed up works as before, and names an account
    // by its handle wherever it names an id.
    c.ok(&["-i", "2", "post", "classic", "still", "works"], "")
        .await;
    c.ok(&["-i", "2", "follow", "Alice"], "").await;
    let mut one = InteractiveClient::spawn(&["-c", &c.coord, "--state-dir", &c.state, "-i", "1"]);
    one.send_line("FOLLOW alice").await;
    one.send_line("UNFOLLOW alice").await;
    one.send_line("FOLLOW nobody_here").await;
    one.close_stdin();
    match one
        .wait_exit(Duration::from_millis(CLIENT_START_DEADLINE_MS))
        .await
    {
        Some(0) => {}
        other => panic!(
            "interactive client of 1: {other:?}\n{}{}",
            one.stdout(),
            one.stderr()
        ),
    }
    let said = one.stdout();
    assert!(said.contains("no account nobody_here"), "{said}");
    match sns.list(request(2, &[])).await {
        Ok(_) => {}
        Err(s) => panic!("classic List as 2: {s}"),
    }
}

/// A session survives a `kill -9` of the client and of the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_client_crash_and_a_failover() {
    let mut d = start(1, 1).await;
    d.login_all(&[1]).await;
    let c = Client::of(&d);
    c.ok(&["signup", "bob", "--password-stdin"], "pw of bob\n")
        .await;
    let state = d.client_state_dir().display().to_string();
    let coord = d.coord_addr();
    // An interactive session, killed: the next run needs no password.
    let mut client = InteractiveClient::spawn(&["-c", &coord, "--state-dir", &state, "-u", "bob"]);
    client
        .wait_stdout(
            Duration::from_millis(CLIENT_START_DEADLINE_MS),
            "the login line",
            |out| out.contains("logged in as bob (id 2) on cluster 1"),
        )
        .await;
    client.kill().await;
    c.ok(
        &["-u", "bob", "post", "after", "the", "client", "crash"],
        "",
    )
    .await;
    // kill -9 of the primary: the promoted secondary knows the session.
    let (old, _, _) = ready_for_failover(&d, 1).await;
    d.kill9_primary(1).await;
    c.ok(&["-u", "bob", "post", "after", "the", "failover"], "")
        .await;
    let (now, _) = d.primary_of(1).await;
    assert_ne!(now, old, "a secondary took over");
    let out = c.ok(&["-u", "bob", "--json", "timeline"], "").await;
    assert!(out.contains("after the failover"), "{out}");
    assert!(out.contains("after the client crash"), "{out}");
}

/// With `--require-accounts`, every call needs a token: an id that never
/// signed up is refused too, an account works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_accounts_refuses_every_id_without_a_session() {
    let mut config = tsn_harness::Config::new(1, 0, common::Q_MS);
    config.failure_timeout_ms = common::FAILURE_TIMEOUT_MS;
    config.server_args = vec!["--require-accounts".to_string()];
    let d = Deployment::start_with(config).await;
    let (_, primary) = d.primary_of(1).await;
    let mut sns = sns_client(&primary);
    refused("classic Login as 1", sns.login(request(1, &[])).await);
    refused(
        "Posts.Post as 1",
        posts_client(&primary)
            .post(post_request(1, "1-a", "IMPERSONATED"))
            .await,
    );
    let c = Client::of(&d);
    c.ok(&["signup", "carol", "--password-stdin"], "pw\n").await;
    c.ok(&["-u", "carol", "post", "hello"], "").await;
    let (code, _, err) = c.run(&["-i", "5", "post", "hello"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("needs an account"), "{err}");
    let stored = files_holding(&d.datastore_root(), "IMPERSONATED");
    assert!(stored.is_empty(), "{stored:?}");
}

/// One interactive session of an account at a time: a second one, from
/// another client, is refused with a clear message while the first is
/// online; with `--take-over` it starts and the first ends. The same
/// client started again after a crash is the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_interactive_login_is_refused_unless_it_takes_over() {
    let d = start(1, 0).await;
    let first = Client::of(&d);
    first
        .ok(&["signup", "dana", "--password-stdin"], "pw of dana\n")
        .await;
    let other_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let second = Client {
        coord: d.coord_addr(),
        state: other_dir.path().display().to_string(),
    };
    second
        .ok(&["-u", "dana", "login", "--password-stdin"], "pw of dana\n")
        .await;
    let interactive = |c: &Client, extra: &[&str]| {
        let mut args = vec![
            "-c",
            c.coord.as_str(),
            "--state-dir",
            c.state.as_str(),
            "-u",
            "dana",
        ];
        args.extend_from_slice(extra);
        InteractiveClient::spawn(&args)
    };
    let deadline = Duration::from_millis(CLIENT_START_DEADLINE_MS);
    let mut a = interactive(&first, &[]);
    a.wait_stdout(deadline, "the login line", |o| {
        o.contains("logged in as dana (id ") && o.contains(") on cluster 1")
    })
    .await;
    // The same client, killed and started again: not a second login.
    a.kill().await;
    let mut a = interactive(&first, &[]);
    a.wait_stdout(deadline, "the login line after a restart", |o| {
        o.contains("logged in as dana")
    })
    .await;
    // Another client is refused while it is online.
    let mut b = interactive(&second, &[]);
    assert_eq!(b.wait_exit(deadline).await, Some(1), "{}", b.stdout());
    assert!(
        b.stderr().contains("logged in elsewhere") && b.stderr().contains("--take-over"),
        "{}",
        b.stderr()
    );
    // Taking over: the second starts, the first ends with a message.
    let mut b = interactive(&second, &["--take-over"]);
    b.wait_stdout(deadline, "the login line of the take-over", |o| {
        o.contains("logged in as dana")
    })
    .await;
    assert_eq!(a.wait_exit(deadline).await, Some(1), "{}", a.stdout());
    assert!(a.stderr().contains("taken over"), "{}", a.stderr());
    b.kill().await;
}
