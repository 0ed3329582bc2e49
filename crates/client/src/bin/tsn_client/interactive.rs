//! The interactive session, like the classic Tiny SNS client: a `Cmd> `
//! prompt for FOLLOW, UNFOLLOW, LIST, TIMELINE, HELP and EXIT; TIMELINE
//! switches to timeline mode for the rest of the session, where arriving
//! posts print at once and every line typed is a post. The user is logged
//! in before the first prompt ([`log_in`]); lines come from [`Input`]: a
//! line editor at a terminal, plain lines from a pipe.

use tsn_client::pending::PendingStore;
use tsn_client::post::{self, PostError};
use tsn_client::{RetryPolicy, Router};
use tsn_datastore::handle::{Handle, Pattern};

use crate::follow::{self, Relation};
use crate::ids;
use crate::input::Input;
use crate::line_reader::Line;
use crate::list;
use crate::output::Output;
use crate::timeline;

pub const PROMPT: &str = "Cmd> ";

/// Longest command word quoted back in an "Unknown command" message.
const QUOTED_WORD_MAX_CHARS: usize = 64;

pub const HELP: &str = "\
Commands (upper or lower case):
  FOLLOW <id>    follow user <id>
  UNFOLLOW <id>  stop following user <id>
  LIST           show every user and your followers
  LIST <pattern> show the accounts whose handle matches (* and ?)
  TIMELINE       switch to timeline mode: see posts as they arrive, type a line to post it
  HELP           show this list
  EXIT           leave";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Follow(u32),
    Unfollow(u32),
    /// FOLLOW and UNFOLLOW of an account's handle.
    FollowHandle(Handle),
    UnfollowHandle(Handle),
    List,
    /// LIST with a glob over handles.
    ListAccounts(Pattern),
    Timeline,
    Help,
    Exit,
    /// A blank line.
    Nothing,
}

/// Parses one typed line; the error is the message to show (nothing is
/// sent for it).
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let Some(word) = words.next() else {
        return Ok(Command::Nothing);
    };
    let args: Vec<&str> = words.collect();
    let name = word.to_ascii_uppercase();
    match name.as_str() {
        "FOLLOW" | "UNFOLLOW" => {
            let [arg] = args[..] else {
                return Err(format!("{name} takes one user id, for example: {name} 2"));
            };
            let follow = name == "FOLLOW";
            Ok(match ids::parse_target(arg)? {
                ids::Target::Id(id) if follow => Command::Follow(id),
                ids::Target::Id(id) => Command::Unfollow(id),
                ids::Target::Handle(h) if follow => Command::FollowHandle(h),
                ids::Target::Handle(h) => Command::UnfollowHandle(h),
            })
        }
        "LIST" if args.len() == 1 => Ok(Command::ListAccounts(Pattern::parse(args[0])?)),
        "LIST" if args.len() > 1 => Err("LIST takes no arguments, or one pattern".to_string()),
        "LIST" | "TIMELINE" | "HELP" | "EXIT" => {
            if !args.is_empty() {
                return Err(format!("{name} takes no arguments"));
            }
            Ok(match name.as_str() {
                "LIST" => Command::List,
                "TIMELINE" => Command::Timeline,
                "HELP" => Command::Help,
                _ => Command::Exit,
            })
        }
        _ => {
            let quoted: String = word.chars().take(QUOTED_WORD_MAX_CHARS).collect();
            Err(format!(
                "Unknown command \"{quoted}\"; type HELP for the commands"
            ))
        }
    }
}

/// Logs the user in before the first prompt, as the classic client does,
/// and says where: from then on the user exists for everyone (another
/// user's FOLLOW of them succeeds), even before they type a command.
pub async fn log_in(
    router: &Router,
    user: u32,
    handle: Option<&str>,
    out: Output,
    policy: &RetryPolicy,
) -> anyhow::Result<()> {
    // The router logs the user in on each new primary before a call: a
    // call that only takes the route is the login.
    let route = router
        .call(user, policy, |route| async move { Ok(route) })
        .await?;
    match handle {
        Some(handle) => crate::login::print_logged_in(&out, handle, user, route.cluster)?,
        None if out.json() => out.json_line(&serde_json::json!({
            "logged_in": user,
            "cluster": route.cluster,
        }))?,
        None => out.line(&format!("logged in as {user} on cluster {}", route.cluster))?,
    }
    Ok(())
}

/// Runs the session on stdin until EXIT or the end of input.
pub async fn run(
    router: &Router,
    user: u32,
    store: &PendingStore,
    out: Output,
    policy: &RetryPolicy,
) -> anyhow::Result<()> {
    let mut input = Input::open(out).await;
    loop {
        let Some(line) = read_text(&mut input, Some(PROMPT), out).await? else {
            return Ok(());
        };
        let Some(line) = line else {
            continue;
        };
        let command = match parse(&line) {
            Ok(command) => command,
            Err(message) => {
                say(out, &message)?;
                continue;
            }
        };
        match command {
            Command::Nothing => {}
            Command::Help => {
                if !out.json() {
                    out.line(HELP)?;
                }
            }
            Command::Exit => return Ok(()),
            Command::Follow(target) => {
                relation(router, user, out, Relation::Follow, target, policy).await?
            }
            Command::Unfollow(target) => {
                relation(router, user, out, Relation::Unfollow, target, policy).await?
            }
            Command::FollowHandle(ref handle) | Command::UnfollowHandle(ref handle) => {
                let relation_kind = if matches!(command, Command::FollowHandle(_)) {
                    Relation::Follow
                } else {
                    Relation::Unfollow
                };
                let target = ids::Target::Handle(handle.clone());
                let resolved = match router.coord() {
                    Some(coord) => ids::resolve(coord, &target).await,
                    None => Err(anyhow::anyhow!("no coordinator to look up {target:?}")),
                };
                match resolved {
                    Ok(id) => relation(router, user, out, relation_kind, id, policy).await?,
                    Err(error) => say(out, &format!("{error:#}"))?,
                }
            }
            Command::List => match list::run(router, user, policy).await {
                Ok(reply) => list::print(&out, &reply)?,
                Err(error) => say(out, &error.to_string())?,
            },
            Command::ListAccounts(pattern) => match router.coord() {
                Some(coord) => match list::accounts(coord, &pattern).await {
                    Ok(reply) => list::print_accounts(&out, &reply)?,
                    Err(error) => say(out, &format!("{error:#}"))?,
                },
                None => say(out, "no coordinator to ask for accounts")?,
            },
            Command::Timeline => {
                return timeline_mode(router, user, store, out, policy, input).await;
            }
        }
    }
}

async fn relation(
    router: &Router,
    user: u32,
    out: Output,
    relation: Relation,
    target: u32,
    policy: &RetryPolicy,
) -> anyhow::Result<()> {
    match follow::run(router, user, relation, target, policy).await {
        Ok(reply) => follow::print(&out, relation, target, &reply)?,
        Err(error) => say(out, &error.to_string())?,
    }
    Ok(())
}

/// Timeline mode, for the rest of the session: the timeline stream prints
/// posts as they arrive while each typed line is posted (through the
/// pending file, like `post`). Ends at the end of input.
async fn timeline_mode(
    router: &Router,
    user: u32,
    store: &PendingStore,
    out: Output,
    policy: &RetryPolicy,
    mut input: Input,
) -> anyhow::Result<()> {
    if !out.json() {
        out.line("Now you are in the timeline")?;
    }
    let watcher = timeline::watch(router.clone(), user, out, None);
    let posting = async {
        loop {
            let Some(line) = read_text(&mut input, None, out).await? else {
                return anyhow::Ok(());
            };
            let Some(text) = line else {
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            match post::post(router, user, store, &text, policy).await {
                Ok(_) => {}
                Err(error @ PostError::Pending(_)) => return Err(error.into()),
                Err(error) => say(out, &error.to_string())?,
            }
        }
    };
    tokio::select! {
        result = watcher => result,
        result = posting => result,
    }
}

/// The next line as text, asked for with `prompt`: `Ok(None)` at the end
/// of input, `Ok(Some(None))` for a line that was refused (and said so).
async fn read_text(
    input: &mut Input,
    prompt: Option<&str>,
    out: Output,
) -> anyhow::Result<Option<Option<String>>> {
    let Some(line) = input.next_line(prompt, out).await? else {
        return Ok(None);
    };
    if let Some(complaint) = line.complaint(input.max_bytes()) {
        say(out, &complaint)?;
        return Ok(Some(None));
    }
    match line {
        Line::Text(text) => Ok(Some(Some(text))),
        _ => Ok(Some(None)),
    }
}

/// A message for the user of the session: a line, or `{"error":..}`.
fn say(out: Output, message: &str) -> std::io::Result<()> {
    if out.json() {
        out.json_line(&serde_json::json!({ "error": message }))
    } else {
        out.line(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_case_insensitive() {
        assert_eq!(parse("follow 2"), Ok(Command::Follow(2)));
        assert_eq!(parse("  FoLLoW   17  "), Ok(Command::Follow(17)));
        assert_eq!(parse("UNFOLLOW 3"), Ok(Command::Unfollow(3)));
        assert_eq!(parse("list"), Ok(Command::List));
        assert_eq!(
            parse("LIST Al*"),
            Ok(Command::ListAccounts(Pattern::parse("al*").unwrap()))
        );
        assert!(parse("LIST a-b").is_err());
        assert!(parse("LIST a b").is_err());
        assert_eq!(parse("Timeline"), Ok(Command::Timeline));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("EXIT"), Ok(Command::Exit));
        assert_eq!(parse("   "), Ok(Command::Nothing));
    }

    #[test]
    fn unknown_words_are_named() {
        assert_eq!(
            parse("post hello"),
            Err("Unknown command \"post\"; type HELP for the commands".to_string())
        );
        let long = "x".repeat(500);
        let err = parse(&long).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn arguments_are_checked_before_sending() {
        assert!(parse("FOLLOW").unwrap_err().contains("takes one user id"));
        assert!(parse("follow 1 2")
            .unwrap_err()
            .contains("takes one user id"));
        assert!(parse("follow a.b").unwrap_err().starts_with("bad user id"));
        assert_eq!(
            parse("follow Alice"),
            Ok(Command::FollowHandle(Handle::parse("alice").unwrap()))
        );
        assert!(parse("unfollow 0").unwrap_err().starts_with("bad user id"));
        assert!(parse("unfollow -4").unwrap_err().starts_with("bad user id"));
        // One word after LIST is a pattern of handles; more is refused.
        assert_eq!(
            parse("list all two"),
            Err("LIST takes no arguments, or one pattern".to_string())
        );
        assert_eq!(
            parse("timeline all"),
            Err("TIMELINE takes no arguments".to_string())
        );
    }
}
