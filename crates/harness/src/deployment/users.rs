//! What users do and see, and the waits for it to converge.
//!
//! Users, follows and posts reach other clusters through the sync services
//! at their own pace, so each helper here names the state it waits for and
//! waits for it with a deadline, reporting what it saw instead on timeout.
//! These are the building blocks of the tests' scenarios.

use std::collections::BTreeSet;
use std::time::Duration;

use tsn_datastore::limits::TIMELINE_READ_MAX_POSTS;
use tsn_datastore::Entry;
use tsn_proto::tsn::TimelinePost;

use super::{path_arg, strings, Deployment};
use crate::api::Listing;
use crate::cli::{run_client, run_client_with_stdin, InteractiveClient};
use crate::fault_check::read_journal;
use crate::limits::CONVERGE_DEADLINE_MS;
use crate::results::{line_count, post_texts};
use crate::wait::wait_for;

impl Deployment {
    /// Logs every user in and waits until each one's LIST shows them all
    /// (users reach other clusters through the sync services).
    pub async fn login_all(&self, users: &[u32]) {
        for &user in users {
            match self.api.login(user).await {
                Ok(msg) if msg == "SUCCESS" => {}
                other => panic!("login of user {user}: {other:?}"),
            }
        }
        let want: BTreeSet<String> = users.iter().map(u32::to_string).collect();
        for &user in users {
            let api = self.api();
            let want = want.clone();
            wait_for(
                converge_deadline(),
                &format!("user {user}'s LIST to show users {want:?}"),
                || {
                    let (api, want) = (api.clone(), want.clone());
                    async move {
                        let l = api.list(user).await.map_err(|s| s.to_string())?;
                        if want.is_subset(&l.all_users) {
                            Ok(())
                        } else {
                            Err(format!("{:?}", l.all_users))
                        }
                    }
                },
            )
            .await;
        }
    }

    /// Follows `target` as `user`, expecting SUCCESS, and waits until the
    /// follow reached `target`'s cluster (`target`'s followers show `user`).
    pub async fn follow_and_wait(&self, user: u32, target: u32) {
        match self.api.follow(user, &target.to_string()).await {
            Ok(msg) if msg == "SUCCESS" => {}
            other => panic!("user {user} FOLLOW {target}: {other:?}"),
        }
        self.wait_list(
            target,
            &format!("user {target}'s followers to include {user}"),
            |l| l.followers.contains(&user.to_string()),
        )
        .await;
    }

    /// Waits until `user`'s LIST satisfies `check`; returns that LIST.
    pub async fn wait_list(
        &self,
        user: u32,
        what: &str,
        check: impl Fn(&Listing) -> bool,
    ) -> Listing {
        let api = self.api();
        let check = &check;
        wait_for(converge_deadline(), what, || {
            let api = api.clone();
            async move {
                let l = api.list(user).await.map_err(|s| s.to_string())?;
                if check(&l) {
                    Ok(l)
                } else {
                    Err(format!("{l:?}"))
                }
            }
        })
        .await
    }

    /// Waits until `user`'s followers are exactly `want`.
    pub async fn wait_followers(&self, user: u32, want: BTreeSet<String>) {
        let what = format!("user {user}'s followers to be {want:?}");
        self.wait_list(user, &what, |l| l.followers == want).await;
    }

    /// Waits until the texts of `user`'s whole timeline (newest first) are
    /// exactly `want`; returns the posts.
    pub async fn wait_timeline(&self, user: u32, want: &[String]) -> Vec<TimelinePost> {
        let what = format!("user {user}'s timeline to be {want:?}");
        self.wait_timeline_where(user, &what, |got| got == want)
            .await
    }

    /// Waits until `user`'s timeline holds a post with text `text`.
    pub async fn wait_timeline_has(&self, user: u32, text: &str) {
        let what = format!("user {user}'s timeline to hold {text:?}");
        self.wait_timeline_where(user, &what, |got| got.iter().any(|t| t == text))
            .await;
    }

    /// Waits until the texts of `user`'s whole timeline (newest first)
    /// satisfy `check`; returns the posts.
    async fn wait_timeline_where(
        &self,
        user: u32,
        what: &str,
        check: impl Fn(&[String]) -> bool,
    ) -> Vec<TimelinePost> {
        let api = self.api();
        let check = &check;
        wait_for(converge_deadline(), what, || {
            let api = api.clone();
            async move {
                let posts = api
                    .read(user, TIMELINE_READ_MAX_POSTS as u32)
                    .await
                    .map_err(|s| s.to_string())?;
                let got = post_texts(&posts);
                if check(&got) {
                    Ok(posts)
                } else {
                    Err(format!("{got:?}"))
                }
            }
        })
        .await
    }

    /// `user`'s whole timeline (up to the read limit), newest first.
    pub async fn timeline(&self, user: u32) -> Vec<TimelinePost> {
        match self.api.read(user, TIMELINE_READ_MAX_POSTS as u32).await {
            Ok(posts) => posts,
            Err(status) => panic!("Posts.Read of user {user}: {status}"),
        }
    }

    /// Lines in the journal of server `server_id` of `cluster`.
    pub fn journal_lines(&self, cluster: u32, server_id: u32) -> usize {
        line_count(&self.layout(cluster, server_id).journal())
    }

    /// Every entry of the journal of server `server_id` of `cluster`, in
    /// file order (none if it is missing); panics if it cannot be read.
    pub fn journal(&self, cluster: u32, server_id: u32) -> Vec<Entry> {
        match read_journal(&self.layout(cluster, server_id)) {
            Ok(entries) => entries,
            Err(e) => panic!("the journal of server {server_id} of cluster {cluster}: {e}"),
        }
    }

    /// `tsn_client -c <coordinator> --state-dir <dir> args…`.
    pub async fn client(&self, args: &[&str]) -> (i32, String, String) {
        let full = self.client_args(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run_client(&refs).await
    }

    /// Like [`Deployment::client`], with `input` on stdin.
    pub async fn client_with_stdin(&self, args: &[&str], input: &str) -> (i32, String, String) {
        let full = self.client_args(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run_client_with_stdin(&refs, input).await
    }

    /// An interactive `tsn_client` session as `user`.
    pub fn interactive_client(&self, user: u32) -> InteractiveClient {
        let full = self.client_args(&["-i", &user.to_string()]);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        InteractiveClient::spawn(&refs)
    }

    fn client_args(&self, args: &[&str]) -> Vec<String> {
        let mut full = strings(&[
            "-c",
            &self.coord_addr(),
            "--state-dir",
            &path_arg(&self.client_state_dir()),
        ]);
        full.extend(args.iter().map(|a| a.to_string()));
        full
    }
}

fn converge_deadline() -> Duration {
    Duration::from_millis(CONVERGE_DEADLINE_MS)
}
