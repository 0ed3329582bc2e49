//! Client ids typed by the user, checked before anything is sent.

use tsn_cluster::coord::CoordClient;
use tsn_datastore::handle::Handle;
use tsn_datastore::limits::USER_ID_MAX;

/// A user named by its id or by its account's handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Id(u32),
    Handle(Handle),
}

/// Parses a user named by id (digits) or handle; the error names both.
pub fn parse_target(text: &str) -> Result<Target, String> {
    if let Ok(id) = parse_id(text, "user id") {
        return Ok(Target::Id(id));
    }
    Handle::parse(text.trim()).map(Target::Handle).map_err(|_| {
        format!(
            "bad user id {text:?}: expected a positive integer up to {USER_ID_MAX} or an account's handle"
        )
    })
}

/// The id of `target`: itself, or the id of its account, asked of the
/// coordinator.
pub async fn resolve(coord: &CoordClient, target: &Target) -> anyhow::Result<u32> {
    match target {
        Target::Id(id) => Ok(*id),
        Target::Handle(handle) => match coord.resolve(handle.as_str()).await {
            Ok(account) => Ok(account.user),
            Err(status) if status.code() == tonic::Code::NotFound => {
                anyhow::bail!("no account {handle}")
            }
            Err(status) => anyhow::bail!("cannot look up {handle}: {}", status.message()),
        },
    }
}

/// Parses a client or target id: a positive decimal integer that fits the
/// classic protocol's `int32`. `what` names the id in the error
/// ("client id", "user id").
pub fn parse_id(text: &str, what: &str) -> Result<u32, String> {
    tsn_cluster::parse_user_id(text).ok_or_else(|| {
        format!("bad {what} {text:?}: expected a positive integer up to {USER_ID_MAX}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_positive_int32() {
        assert_eq!(parse_id("1", "client id"), Ok(1));
        assert_eq!(parse_id(" 42 ", "client id"), Ok(42));
        assert_eq!(parse_id("2147483647", "client id"), Ok(2_147_483_647));
    }

    #[test]
    fn a_target_is_an_id_or_a_handle() {
        assert_eq!(parse_target("4"), Ok(Target::Id(4)));
        assert_eq!(
            parse_target("Alice"),
            Ok(Target::Handle(Handle::parse("alice").unwrap()))
        );
        for bad in ["0", "-3", "a-b", "", "2147483648"] {
            let err = parse_target(bad).unwrap_err();
            assert!(err.starts_with("bad user id"), "{err}");
        }
    }

    #[test]
    fn refuses_everything_else_with_a_clear_message() {
        for bad in ["", "0", "-3", "abc", "1e3", "2147483648", "+1", "4 5"] {
            let err = parse_id(bad, "client id").unwrap_err();
            assert!(err.starts_with("bad client id"), "{err}");
            assert!(!err.contains('\n'));
        }
    }
}
