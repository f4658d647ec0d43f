//! Users, tokens, permissions and ownership (issue "Users, tokens, permissions, ownership and
//! TLS"), with the real momd and momctl: each rule holds, and each refusal gives the
//! documented error and exit code (5: unauthorized or forbidden).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{momctl_env, CtlOut, Momd, CTL_TIMEOUT};

const ROOT_PW: &str = "root-secret-9f2";
const ALICE_PW: &str = "alice-secret-4c7";

/// momctl against `m` as whoever `env` says, with its own config dir (saved tokens).
fn ctl(m: &Momd, cfg: &Path, env: &[(&str, &str)], args: &[&str], stdin: Option<&[u8]>) -> CtlOut {
    let addr = m.addr();
    let mut full = vec!["-s", addr.as_str()];
    full.extend_from_slice(args);
    let cfg = cfg.to_string_lossy().into_owned();
    let mut envs = vec![("MOM_CONFIG_DIR", cfg.as_str())];
    envs.extend_from_slice(env);
    momctl_env(&full, stdin, CTL_TIMEOUT, &envs)
}

fn ok(out: CtlOut) -> CtlOut {
    assert_eq!(out.code, 0, "{out:?}");
    out
}

fn refused(out: CtlOut, code: i32, says: &str) {
    assert_eq!(out.code, code, "{out:?}");
    assert!(out.stderr.contains(says), "expected {says:?}: {out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
}

/// The first admin and alice, added by the anonymous admin of a server without users.
fn with_users(m: &Momd, cfg: &Path) {
    ok(ctl(
        m,
        cfg,
        &[],
        &["user", "add", "root", "--admin", "--password-stdin"],
        Some(format!("{ROOT_PW}\n").as_bytes()),
    ));
    ok(ctl(
        m,
        cfg,
        &[("MOM_USER", "root"), ("MOM_PASSWORD", ROOT_PW)],
        &[
            "user",
            "add",
            "alice",
            "--publish",
            "orders.>",
            "--subscribe",
            "orders.>",
            "--subscribe",
            "$inbox.>",
            "--password-stdin",
        ],
        Some(format!("{ALICE_PW}\n").as_bytes()),
    ));
}

#[test]
fn users_permissions_ownership_and_tokens() {
    let mut m = Momd::start();
    let home = tempfile::tempdir().expect("temp dir");
    let cfg = home.path();
    let root = [("MOM_USER", "root"), ("MOM_PASSWORD", ROOT_PW)];
    with_users(&m, cfg);

    // Once a user exists, every client authenticates.
    refused(
        ctl(&m, cfg, &[], &["stats"], None),
        5,
        "authentication required",
    );
    let started = Instant::now();
    refused(
        ctl(
            &m,
            cfg,
            &[("MOM_USER", "root"), ("MOM_PASSWORD", "wrong")],
            &["stats"],
            None,
        ),
        5,
        "wrong user or password",
    );
    refused(
        ctl(
            &m,
            cfg,
            &[("MOM_USER", "nobody"), ("MOM_PASSWORD", "x")],
            &["stats"],
            None,
        ),
        5,
        "wrong user or password",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "failed logins from one address are answered later and later"
    );
    ok(ctl(&m, cfg, &root, &["stats"], None));

    // alice logs in: a token saved for this server, readable by her only, no password in it.
    let login = ok(ctl(
        &m,
        cfg,
        &[("MOM_USER", "alice")],
        &["login", "--password-stdin"],
        Some(format!("{ALICE_PW}\n").as_bytes()),
    ));
    assert!(login.stdout_str().contains("as alice"), "{login:?}");
    let tokens = cfg.join("tokens.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&tokens)
        .expect("tokens.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved = std::fs::read_to_string(&tokens).expect("tokens");
    assert!(!saved.contains(ALICE_PW));
    let token: serde_json::Value = serde_json::from_str(&saved).expect("json");
    let token = token[m.addr()]["users"]["alice"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let who = ok(ctl(&m, cfg, &[], &["whoami"], None));
    assert!(who.stdout_str().starts_with("alice at "), "{who:?}");

    // Her patterns, and nothing else.
    ok(ctl(
        &m,
        cfg,
        &[],
        &["publish", "orders.eu", "o1", "-q"],
        None,
    ));
    refused(
        ctl(&m, cfg, &[], &["publish", "audit.x", "a1", "-q"], None),
        5,
        "may not publish to \"audit.x\"",
    );
    refused(
        ctl(
            &m,
            cfg,
            &[],
            &["subscribe", "audit.>", "--from", "all", "-n", "1"],
            None,
        ),
        5,
        "may not subscribe",
    );
    refused(
        ctl(
            &m,
            cfg,
            &[],
            &["subscribe", "$sys.events", "--from", "all", "-n", "1"],
            None,
        ),
        5,
        "may not subscribe",
    );
    let got = ok(ctl(
        &m,
        cfg,
        &[],
        &[
            "subscribe",
            "orders.>",
            "--from",
            "all",
            "-n",
            "1",
            "--timeout",
            "10s",
        ],
        None,
    ));
    assert_eq!(got.stdout_str().trim(), "o1");
    ok(ctl(
        &m,
        cfg,
        &[],
        &["queue", "create", "aq", "--bind", "orders.>"],
        None,
    ));
    refused(
        ctl(
            &m,
            cfg,
            &[],
            &["queue", "create", "bad", "--bind", "audit.>"],
            None,
        ),
        5,
        "may not subscribe",
    );

    // Ownership: root's topic and queue are not alice's to change; her own are.
    ok(ctl(
        &m,
        cfg,
        &root,
        &["publish", "orders.root", "r1", "-q"],
        None,
    ));
    ok(ctl(
        &m,
        cfg,
        &root,
        &["queue", "create", "rq", "--bind", "audit.>"],
        None,
    ));
    refused(
        ctl(&m, cfg, &[], &["topic", "rm", "orders.root"], None),
        5,
        "belongs to \"root\"",
    );
    refused(
        ctl(&m, cfg, &[], &["queue", "rm", "rq"], None),
        5,
        "belongs to \"root\"",
    );
    refused(
        ctl(&m, cfg, &[], &["recv", "rq", "--timeout", "1s"], None),
        5,
        "may not subscribe",
    );
    let info = ok(ctl(&m, cfg, &[], &["topic", "info", "orders.eu"], None));
    assert!(info.stdout_str().contains("owner:      alice"), "{info:?}");
    let q = ok(ctl(&m, cfg, &[], &["queue", "info", "aq", "--json"], None));
    assert!(q.stdout_str().contains("\"owner\":\"alice\""), "{q:?}");
    ok(ctl(
        &m,
        cfg,
        &[],
        &["topic", "rm", "orders.eu", "--force"],
        None,
    ));
    ok(ctl(
        &m,
        cfg,
        &root,
        &["topic", "rm", "orders.root", "--force"],
        None,
    ));

    // Users are for admins; a user may see itself.
    refused(ctl(&m, cfg, &[], &["user", "ls"], None), 5, "not an admin");
    ok(ctl(&m, cfg, &[], &["user", "info", "alice"], None));
    refused(
        ctl(&m, cfg, &[], &["user", "info", "root"], None),
        5,
        "itself or an admin",
    );
    let granted = ok(ctl(
        &m,
        cfg,
        &root,
        &["user", "grant", "alice", "--publish", "audit.*"],
        None,
    ));
    assert!(granted.stdout_str().contains("audit.*"), "{granted:?}");
    ok(ctl(&m, cfg, &[], &["publish", "audit.x", "a2", "-q"], None));
    ok(ctl(
        &m,
        cfg,
        &root,
        &["user", "revoke", "alice", "--publish", "audit.*"],
        None,
    ));
    refused(
        ctl(&m, cfg, &[], &["publish", "audit.x", "a3", "-q"], None),
        5,
        "may not publish",
    );

    // Logout revokes the token on the server, also after a restart.
    ok(ctl(&m, cfg, &[], &["logout"], None));
    refused(
        ctl(&m, cfg, &[("MOM_TOKEN", token.as_str())], &["stats"], None),
        5,
        "token revoked",
    );
    m.sigterm(Duration::from_secs(15));
    m.restart();
    refused(
        ctl(&m, cfg, &[("MOM_TOKEN", token.as_str())], &["stats"], None),
        5,
        "token revoked",
    );

    // No secret in momd's log or in clear in the data dir.
    let log = m.stderr();
    for secret in [ROOT_PW, ALICE_PW, token.as_str()] {
        assert!(!log.contains(secret), "a secret in momd's log");
        assert!(
            !dir_holds(&m.data_dir(), secret.as_bytes()),
            "a secret in the data dir"
        );
    }

    // A removed user's token stops working.
    ok(ctl(&m, cfg, &root, &["user", "rm", "alice"], None));
    refused(
        ctl(
            &m,
            cfg,
            &[("MOM_USER", "alice"), ("MOM_PASSWORD", ALICE_PW)],
            &["stats"],
            None,
        ),
        5,
        "wrong user or password",
    );
}

fn dir_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_holds(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn an_expired_token_is_refused_with_what_to_do() {
    let m = Momd::start_with(&["--token-ttl", "1s"]);
    let home = tempfile::tempdir().expect("temp dir");
    let cfg = home.path();
    with_users(&m, cfg);
    ok(ctl(
        &m,
        cfg,
        &[("MOM_USER", "alice"), ("MOM_PASSWORD", ALICE_PW)],
        &["login"],
        None,
    ));
    ok(ctl(&m, cfg, &[], &["whoami"], None));
    std::thread::sleep(Duration::from_millis(2100));
    refused(
        ctl(&m, cfg, &[], &["whoami"], None),
        5,
        "expired: run momctl login",
    );
}

#[test]
fn anonymous_clients_only_from_the_machine_itself() {
    // No users: momd will not listen where others could reach it as admin...
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_port();
    let out = Command::new(common::momd_bin())
        .args(["--listen", &format!("127.0.0.2:{port}"), "--data"])
        .arg(dir.path().join("d"))
        .stdin(Stdio::null())
        .output()
        .expect("momd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 127.0.0.2"), "{err}");
    assert!(err.contains("momd user add"), "{err}");

    // ...and a client from another address than 127.0.0.1 is refused.
    let m = Momd::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        let mut s = sock.connect(m.socket_addr()).await.expect("connect");
        let mut buf = bytes::BytesMut::new();
        let hello = mom_proto::ClientFrame::Hello(mom_proto::Hello {
            id: 1,
            version: mom_proto::PROTOCOL_VERSION,
            ..Default::default()
        });
        mom_proto::encode_frame(&hello, &mut buf, usize::MAX).expect("encode");
        s.write_all(&buf).await.expect("write");
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.expect("a reply");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.expect("its body");
        mom_proto::decode_body::<mom_proto::ServerFrame>(&body).expect("decode")
    });
    match reply {
        mom_proto::ServerFrame::Error(e) => {
            assert_eq!(e.code, mom_proto::ErrorCode::Unauthorized, "{e:?}");
            assert!(e.message.contains("127.0.0.1"), "{e:?}");
        }
        other => panic!("expected unauthorized, got {other:?}"),
    }
    // From 127.0.0.1 it is the admin it always was.
    m.assert_serves();
}

#[test]
fn connections_per_user_are_limited() {
    let m = Momd::start_with(&["--max-connections-per-user", "1"]);
    let home = tempfile::tempdir().expect("temp dir");
    let cfg = home.path();
    with_users(&m, cfg);
    let addr = m.addr();
    let mut held = Command::new(common::momctl_bin())
        .args(["-s", &addr, "subscribe", "orders.>"])
        .env("MOM_CONFIG_DIR", cfg)
        .env("MOM_USER", "alice")
        .env("MOM_PASSWORD", ALICE_PW)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("subscribe");
    let root = [("MOM_USER", "root"), ("MOM_PASSWORD", ROOT_PW)];
    common::wait_for(Duration::from_secs(10), "alice's first connection", || {
        let out = ctl(&m, cfg, &root, &["stats", "--json"], None);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        s["clients"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["user"] == "alice"))
            .then_some(())
    });
    refused(
        ctl(
            &m,
            cfg,
            &[("MOM_USER", "alice"), ("MOM_PASSWORD", ALICE_PW)],
            &["stats"],
            None,
        ),
        1,
        "the limit per user",
    );
    let _ = held.kill();
    let _ = held.wait();
}
