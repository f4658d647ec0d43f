//! Users, permissions and tokens in cluster mode: kept by the metadata group, so a change made
//! through any node holds on every node, also on one killed and started again. Three real
//! momd processes (peers on 127.0.0.1–3), driven by the real momctl.

mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::cluster::peer_list;
use common::*;

const ROOT_PW: &str = "root-secret-3e1";
const ALICE_PW: &str = "alice-secret-8b2";
const BOB_PW: &str = "bob-secret-5d0";

/// Forming a cluster, electing, applying: generous for two shared cores.
const WAIT: Duration = Duration::from_secs(30);
/// A change applied on the node that answered reaches the others with the next heartbeat.
const SPREAD: Duration = Duration::from_secs(10);

/// One trio at a time: three nodes each are enough for two shared cores.
fn one_trio_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Three nodes of cluster `t`: node i's peer listener on 127.0.0.i.
struct Trio {
    nodes: Vec<Momd>,
    /// momctl's config dir (saved tokens), shared by the test's runs.
    cfg: tempfile::TempDir,
}

impl Trio {
    fn start() -> Trio {
        let (list, addrs) = peer_list(3);
        let nodes = (1..=3usize)
            .map(|id| {
                let id_s = id.to_string();
                Momd::start_with(&[
                    "--cluster-id",
                    "t",
                    "--node-id",
                    &id_s,
                    "--peer-listen",
                    &addrs[id - 1],
                    "--peers",
                    &list,
                ])
            })
            .collect();
        let trio = Trio {
            nodes,
            cfg: tempfile::tempdir().expect("temp dir"),
        };
        // Every node answers once it has caught up with the cluster's (no) users.
        for id in 1..=3 {
            poll(WAIT, "the node to take clients", || {
                (trio.ctl(id, &[], &["cluster", "status"], None).code == 0).then_some(())
            });
        }
        trio
    }

    fn node(&mut self, id: usize) -> &mut Momd {
        &mut self.nodes[id - 1]
    }

    /// momctl against node `id` as whoever `env` says.
    fn ctl(&self, id: usize, env: &[(&str, &str)], args: &[&str], stdin: Option<&[u8]>) -> CtlOut {
        let addr = self.nodes[id - 1].addr();
        let mut full = vec!["-s", addr.as_str()];
        full.extend_from_slice(args);
        let cfg = self.cfg.path().to_string_lossy().into_owned();
        let mut envs = vec![("MOM_CONFIG_DIR", cfg.as_str())];
        envs.extend_from_slice(env);
        momctl_env(&full, stdin, Duration::from_secs(20), &envs)
    }

    fn cfg(&self) -> &Path {
        self.cfg.path()
    }

    /// The first admin, added by the anonymous admin (a client on 127.0.0.1) of a cluster
    /// without users, through node `id`.
    fn add_root(&self, id: usize) {
        ok(self.ctl(
            id,
            &[],
            &["user", "add", "root", "--admin", "--password-stdin"],
            Some(format!("{ROOT_PW}\n").as_bytes()),
        ));
    }

    /// Add user `name` with `password` and `--publish`/`--subscribe` `orders.>`, as root
    /// through node `id`.
    fn add_user(&self, id: usize, name: &str, password: &str) {
        ok(self.ctl(
            id,
            ROOT,
            &[
                "user",
                "add",
                name,
                "--publish",
                "orders.>",
                "--subscribe",
                "orders.>",
                "--password-stdin",
            ],
            Some(format!("{password}\n").as_bytes()),
        ));
    }
}

const ROOT: &[(&str, &str)] = &[("MOM_USER", "root"), ("MOM_PASSWORD", ROOT_PW)];

fn as_user<'a>(user: &'a str, password: &'a str) -> [(&'a str, &'a str); 2] {
    [("MOM_USER", user), ("MOM_PASSWORD", password)]
}

/// `wait_for` at a pace that leaves the cores to the nodes: each try runs a momctl.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_for(timeout, what, || {
        let r = f();
        if r.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
        r
    })
}

fn ok(out: CtlOut) -> CtlOut {
    assert_eq!(out.code, 0, "{out:?}");
    out
}

/// Refused with exit 5 (unauthorized or forbidden) and one line saying `says`.
fn refused(out: &CtlOut, says: &str) -> bool {
    out.code == 5 && out.stderr.contains(says) && out.stderr.trim().lines().count() == 1
}

#[test]
fn a_user_added_through_one_node_logs_in_on_every_node_and_once_removed_on_none() {
    let _one = one_trio_at_a_time();
    let trio = Trio::start();
    trio.add_root(1);
    // The node that answered applied it: anonymous clients are over there at once.
    let out = trio.ctl(1, &[], &["topic", "ls"], None);
    assert!(refused(&out, "authentication required"), "{out:?}");
    for id in [2, 3] {
        poll(SPREAD, "root known on every node", || {
            (trio.ctl(id, ROOT, &["user", "ls"], None).code == 0).then_some(())
        });
        let out = trio.ctl(id, &[], &["topic", "ls"], None);
        assert!(refused(&out, "authentication required"), "{out:?}");
    }

    // alice, added through node 2, logs in on node 3 and node 1; the password stays on the
    // node that took it (only its hash is replicated).
    trio.add_user(2, "alice", ALICE_PW);
    let alice = as_user("alice", ALICE_PW);
    for id in [3, 1] {
        let out = poll(SPREAD, "alice known", || {
            let out = trio.ctl(id, &alice, &["whoami"], None);
            (out.code == 0).then_some(out)
        });
        assert!(out.stdout_str().starts_with("alice at "), "{out:?}");
    }
    let listed = ok(trio.ctl(3, ROOT, &["user", "ls", "--json"], None));
    assert!(listed.stdout_str().contains("\"alice\""), "{listed:?}");
    assert!(!listed.stdout_str().contains(ALICE_PW));
    // A name taken is refused whichever node is asked (exit 7: conflict).
    let again = trio.ctl(
        3,
        ROOT,
        &["user", "add", "alice", "--password-stdin"],
        Some(b"other\n"),
    );
    assert_eq!(again.code, 7, "{again:?}");

    // A password changed through node 1 is the one node 3 checks.
    ok(trio.ctl(
        1,
        ROOT,
        &["user", "passwd", "alice", "--password-stdin"],
        Some(b"alice-new-pw\n"),
    ));
    poll(SPREAD, "the new password on node 3", || {
        let out = trio.ctl(3, &as_user("alice", "alice-new-pw"), &["whoami"], None);
        (out.code == 0).then_some(())
    });
    let out = trio.ctl(3, &alice, &["whoami"], None);
    assert!(refused(&out, "wrong user or password"), "{out:?}");

    // Removed through node 3: refused on every node.
    ok(trio.ctl(3, ROOT, &["user", "rm", "alice"], None));
    let alice = as_user("alice", "alice-new-pw");
    let out = trio.ctl(3, &alice, &["whoami"], None);
    assert!(refused(&out, "wrong user or password"), "{out:?}");
    for id in [1, 2] {
        poll(SPREAD, "alice refused", || {
            refused(
                &trio.ctl(id, &alice, &["whoami"], None),
                "wrong user or password",
            )
            .then_some(())
        });
    }
    let out = trio.ctl(2, ROOT, &["user", "rm", "alice"], None);
    assert_eq!(out.code, 6, "{out:?}");
}

#[test]
fn a_token_made_on_one_node_works_on_the_others_until_revoked_on_any() {
    let _one = one_trio_at_a_time();
    let trio = Trio::start();
    trio.add_root(2);
    trio.add_user(2, "alice", ALICE_PW);
    let login = ok(trio.ctl(
        1,
        &[("MOM_USER", "alice")],
        &["login", "--password-stdin"],
        Some(format!("{ALICE_PW}\n").as_bytes()),
    ));
    assert!(login.stdout_str().contains("as alice"), "{login:?}");
    let saved = std::fs::read_to_string(trio.cfg().join("tokens.json")).expect("tokens");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("json");
    let token = saved[trio.nodes[0].addr()]["users"]["alice"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let with_token = [("MOM_TOKEN", token.as_str())];
    for id in [2, 3] {
        let out = poll(SPREAD, "the token taken", || {
            let out = trio.ctl(id, &with_token, &["whoami"], None);
            (out.code == 0).then_some(out)
        });
        assert!(out.stdout_str().starts_with("alice at "), "{out:?}");
    }

    // A second login, on node 3, is signed with the same cluster key: node 1 takes it.
    let second = ok(trio.ctl(
        3,
        &[("MOM_USER", "alice")],
        &["login", "--password-stdin"],
        Some(format!("{ALICE_PW}\n").as_bytes()),
    ));
    assert!(second.stdout_str().contains("as alice"), "{second:?}");
    let saved = std::fs::read_to_string(trio.cfg().join("tokens.json")).expect("tokens");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("json");
    let token3 = saved[trio.nodes[2].addr()]["users"]["alice"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    ok(trio.ctl(1, &[("MOM_TOKEN", token3.as_str())], &["whoami"], None));

    // The first token revoked through node 2 (what `momctl logout` sends): refused there,
    // and on the others.
    revoke_own_token(&trio.nodes[1].addr(), &token);
    let out = trio.ctl(2, &with_token, &["whoami"], None);
    assert!(refused(&out, "token revoked"), "{out:?}");
    for id in [1, 3] {
        poll(SPREAD, "the token refused", || {
            refused(
                &trio.ctl(id, &with_token, &["whoami"], None),
                "token revoked",
            )
            .then_some(())
        });
    }
    // The other token is still good.
    ok(trio.ctl(2, &[("MOM_TOKEN", token3.as_str())], &["whoami"], None));

    // A removed user's token is refused too.
    ok(trio.ctl(1, ROOT, &["user", "rm", "alice"], None));
    for id in [1, 2, 3] {
        poll(SPREAD, "a removed user's token refused", || {
            refused(
                &trio.ctl(id, &[("MOM_TOKEN", token3.as_str())], &["whoami"], None),
                "no longer exists",
            )
            .then_some(())
        });
    }
}

/// Connects to `addr` with `token` and revokes it, as `momctl logout` does.
fn revoke_own_token(addr: &str, token: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut opts = momctl::client::ConnectOptions::new(addr, "revoker");
        opts.token = Some(token.to_string());
        let client = momctl::client::Client::connect(&opts)
            .await
            .expect("connect with the token");
        client.token_revoke(None).await.expect("token_revoke");
    });
}

#[test]
fn a_grant_made_through_one_node_is_enforced_on_another() {
    let _one = one_trio_at_a_time();
    let trio = Trio::start();
    trio.add_root(3);
    trio.add_user(1, "alice", ALICE_PW);
    let alice = as_user("alice", ALICE_PW);
    let publish = |id| trio.ctl(id, &alice, &["publish", "audit.x", "hi", "-q"], None);
    poll(SPREAD, "alice known on node 3", || {
        let out = publish(3);
        refused(&out, "may not publish").then_some(())
    });
    ok(trio.ctl(1, &alice, &["publish", "orders.eu", "ok", "-q"], None));

    let granted = ok(trio.ctl(
        2,
        ROOT,
        &["user", "grant", "alice", "--publish", "audit.*"],
        None,
    ));
    assert!(granted.stdout_str().contains("audit.*"), "{granted:?}");
    ok(publish(2));
    poll(SPREAD, "the grant on node 3", || {
        (publish(3).code == 0).then_some(())
    });

    ok(trio.ctl(
        3,
        ROOT,
        &["user", "revoke", "alice", "--publish", "audit.*"],
        None,
    ));
    assert!(refused(&publish(3), "may not publish"));
    poll(SPREAD, "the revoke on node 1", || {
        refused(&publish(1), "may not publish").then_some(())
    });
    // Taking away a pattern alice lacks: not found (exit 6), on any node.
    let out = trio.ctl(
        2,
        ROOT,
        &["user", "revoke", "alice", "--publish", "audit.*"],
        None,
    );
    assert_eq!(out.code, 6, "{out:?}");
}

#[test]
fn a_node_killed_and_started_again_knows_the_users_changed_meanwhile() {
    let _one = one_trio_at_a_time();
    let mut trio = Trio::start();
    trio.add_root(1);
    trio.add_user(1, "alice", ALICE_PW);
    let alice = as_user("alice", ALICE_PW);
    let bob = as_user("bob", BOB_PW);
    poll(SPREAD, "alice known on node 3", || {
        (trio.ctl(3, &alice, &["whoami"], None).code == 0).then_some(())
    });

    // Node 3 dies; meanwhile alice goes and bob comes.
    trio.node(3).kill9();
    ok(trio.ctl(2, ROOT, &["user", "rm", "alice"], None));
    trio.add_user(1, "bob", BOB_PW);

    // Offline, a node's data dir is not where its users change.
    let data = trio.node(3).data_dir();
    let out = std::process::Command::new(momd_bin())
        .args(["user", "ls", "--data"])
        .arg(&data)
        .output()
        .expect("momd user");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("momctl user"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Back, it authenticates no one before it has caught up with the changes it missed:
    // alice is never let in, not even in its first moments.
    trio.node(3).restart();
    poll(WAIT, "bob known on node 3", || {
        let out = trio.ctl(3, &alice, &["whoami"], None);
        assert_ne!(out.code, 0, "a removed user let in: {out:?}");
        (trio.ctl(3, &bob, &["whoami"], None).code == 0).then_some(())
    });
    let out = trio.ctl(3, &alice, &["whoami"], None);
    assert!(refused(&out, "wrong user or password"), "{out:?}");

    // All three killed and started again: the users are in every node's log.
    for id in 1..=3 {
        trio.node(id).kill9();
    }
    for id in 1..=3 {
        trio.node(id).restart();
    }
    for id in 1..=3 {
        let out = poll(WAIT, "bob known after a restart", || {
            let out = trio.ctl(id, &bob, &["whoami"], None);
            (out.code == 0).then_some(out)
        });
        assert!(out.stdout_str().starts_with("bob at "), "{out:?}");
        let out = trio.ctl(id, &alice, &["whoami"], None);
        assert!(refused(&out, "wrong user or password"), "{out:?}");
        let out = trio.ctl(id, &[], &["topic", "ls"], None);
        assert!(refused(&out, "authentication required"), "{out:?}");
    }
}
