//! Cluster faults end to end: three real momd processes whose peer links all go through
//! fault proxies (`momcheck::proxy`), watched with the real `momctl cluster status`. An
//! isolated leader, a one-way cut, a paused leader and an isolated follower: never two
//! leaders of a group in one term, a new leader wherever a majority can elect one and only
//! there, and after the fault one leader per group that all three follow, their logs caught
//! up. A membership change asked in a minority is answered in seconds, and honestly.
//!
//! The tests run one trio at a time: they watch elections, whose timing a second trio on the
//! same two cores would disturb.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::cluster::{poll, Elections, ProxiedTrio, Status, TRIO};
use common::proxy::{Dir, Flow, Proxy};

/// Forming a cluster, electing, converging: generous for two shared cores.
const WAIT: Duration = Duration::from_secs(30);
/// Longer than an election timeout (0.4–0.8 s) plus the leader lease (0.8 s), with room to spare.
const QUIET: Duration = Duration::from_secs(4);
const PACE: Duration = Duration::from_millis(250);

fn one_trio_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn others(id: u64) -> Vec<u64> {
    TRIO.into_iter().filter(|o| *o != id).collect()
}

/// The leader and term all three agree on once the cluster has formed.
fn formed(trio: &ProxiedTrio, el: &mut Elections) -> (u64, u64) {
    poll(WAIT, "a leader all three agree on", || {
        el.agreed(trio, &TRIO)
    })
}

/// All three agree on one leader per group (`Elections::agreed`); the metadata group's
/// sees every other node follow, and no replica of any group lags.
fn converged(trio: &ProxiedTrio, el: &mut Elections) -> (u64, u64, Status) {
    poll(WAIT, "one leader per group followed by all, lag 0", || {
        let (leader, term) = el.agreed(trio, &TRIO)?;
        let st = el.statuses(trio, &[leader])?.pop()?;
        let follow = TRIO
            .iter()
            .all(|id| *id == leader || st.role(*id) == "follower");
        let caught_up =
            (0..st.groups.len()).all(|slot| TRIO.iter().all(|id| st.lag_in(slot, *id) == Some(0)));
        (follow && caught_up && st.term == term).then_some((leader, term, st))
    })
}

/// A node that leads no group (two groups, three nodes: there is one), and every group as
/// `leader` sees it now.
fn follower_of_all(
    trio: &ProxiedTrio,
    el: &mut Elections,
    leader: u64,
) -> (u64, Vec<common::cluster::Group>) {
    let st = el.statuses(trio, &[leader]).and_then(|mut v| v.pop());
    let groups = st.expect("the leader answers").groups;
    let id = others(leader)
        .into_iter()
        .find(|id| groups.iter().all(|g| g.leader != Some(*id)))
        .expect("a node that leads no group");
    (id, groups)
}

#[test]
fn proxy_cuts_one_direction_and_resets_connections() {
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = echo.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in echo.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(upstream).expect("starting the proxy");
    let mut c = TcpStream::connect(proxy.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let mut echo_of = |c: &mut TcpStream, b: &[u8]| -> Option<Vec<u8>> {
        c.write_all(b).ok()?;
        let mut got = Vec::new();
        while got.len() < b.len() {
            let n = c.read(&mut buf).ok().filter(|n| *n > 0)?;
            got.extend_from_slice(&buf[..n]);
        }
        Some(got)
    };
    assert_eq!(echo_of(&mut c, b"one").as_deref(), Some(&b"one"[..]));

    // The answers are held, the requests get through; once it passes the held bytes follow.
    proxy.set(Dir::Back, Flow::Drop);
    assert_eq!(echo_of(&mut c, b"two"), None);
    proxy.set(Dir::Back, Flow::Pass);
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(b"!").expect("write");
    let mut held = [0u8; 4];
    c.read_exact(&mut held).expect("the held bytes");
    assert_eq!(&held, b"two!");

    // A delayed link is late, not lossy.
    proxy.set(Dir::Forward, Flow::Delay(Duration::from_millis(300)));
    let at = Instant::now();
    assert_eq!(echo_of(&mut c, b"late").as_deref(), Some(&b"late"[..]));
    assert!(at.elapsed() >= Duration::from_millis(300));
    proxy.heal();

    // A reset closes the open connection and refuses the next.
    proxy.reset(true);
    assert_eq!(echo_of(&mut c, b"gone"), None);
    let mut d = TcpStream::connect(proxy.addr()).expect("connect");
    d.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(echo_of(&mut d, b"no"), None);
    proxy.reset(false);
    let mut e = TcpStream::connect(proxy.addr()).expect("connect");
    e.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(echo_of(&mut e, b"back").as_deref(), Some(&b"back"[..]));

    // Dropped, it closes its connections and its listener.
    let addr = proxy.addr();
    drop(proxy);
    assert_eq!(echo_of(&mut e, b"end"), None);
    assert!(TcpStream::connect(addr).is_err(), "{addr} still listens");
}

#[test]
fn an_isolated_leader_is_replaced_in_a_higher_term_and_follows_after_healing() {
    let _one = one_trio_at_a_time();
    let trio = ProxiedTrio::start();
    let mut el = Elections::default();
    let (old, t0) = formed(&trio, &mut el);

    trio.isolate(old);
    let rest = others(old);
    let (new, t1) = poll(WAIT, "the two others electing a new leader", || {
        // The isolated node is asked too: whatever it shows is checked against the others.
        el.statuses(&trio, &[old]);
        el.agreed(&trio, &rest).filter(|(l, _)| *l != old)
    });
    assert!(
        t1 > t0,
        "new leader {new} in term {t1}, old {old} led term {t0}"
    );
    // Cut off, the old leader can win no election: it leads no term after its own.
    let st = el.statuses(&trio, &[old]).and_then(|mut v| v.pop());
    let st = st.expect("the isolated node answers its clients");
    assert!(
        st.leader != Some(old) || st.term == t0,
        "the isolated node leads term {}: {}",
        st.term,
        st.raw
    );
    // While it still leads in its own eyes, it says it is cut off.
    if st.leader == Some(old) {
        poll(WAIT, "the cut-off leader showing itself isolated", || {
            let st = el.statuses(&trio, &[old])?.pop()?;
            (st.leader != Some(old) || st.role(old) == "isolated").then_some(())
        });
    }
    // Still leader in its own eyes, it takes a membership change and cannot commit it: the
    // answer comes in bounded time and says the change may or may not be done (it is not:
    // the majority never sees it).
    if st.groups.iter().all(|g| g.leader == Some(old)) {
        let victim = rest[0].to_string();
        let out = trio.node(old).ctl_timeout(
            &["cluster", "leave", &victim],
            None,
            Duration::from_secs(30),
        );
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains("may or may not"), "{out:?}");
    } else {
        eprintln!("node {old} does not lead every group: no membership change tried");
    }

    trio.heal();
    let (leader, term, st) = converged(&trio, &mut el);
    assert_ne!(leader, old, "{}", st.raw);
    assert!(term >= t1);
    assert_eq!(st.role(old), "follower", "{}", st.raw);
}

#[test]
fn a_one_way_cut_from_the_leader_settles_on_one_leader_and_heals() {
    let _one = one_trio_at_a_time();
    let trio = ProxiedTrio::start();
    let mut el = Elections::default();
    let (old, _) = formed(&trio, &mut el);

    // The follower hears nothing from the leader, and the leader still hears it.
    let deaf = others(old)[0];
    trio.cut(old, deaf);
    // A stable leader: it and another node agree on it, unchanged for QUIET.
    let mut since: Option<(u64, u64, Instant)> = None;
    let deadline = Instant::now() + WAIT;
    let (leader, term) = loop {
        assert!(
            Instant::now() < deadline,
            "no leader stayed for {QUIET:?} within {WAIT:?} (last: {since:?})"
        );
        // A node that leads in its own eyes, backed by another (a stale one would not be).
        let now = el.statuses(&trio, &TRIO).and_then(|all| {
            all.iter()
                .filter(|s| s.leader == Some(s.node))
                .map(|s| (s.node, s.term))
                .find(|(l, t)| {
                    let backers = all.iter().filter(|s| (s.leader, s.term) == (Some(*l), *t));
                    backers.count() >= 2
                })
        });
        match (now, since) {
            (Some(l), Some((sl, st, at))) if l == (sl, st) => {
                if at.elapsed() >= QUIET {
                    break l;
                }
            }
            (Some((l, t)), _) => since = Some((l, t, Instant::now())),
            (None, _) => since = None,
        }
        std::thread::sleep(PACE);
    };
    eprintln!("one-way cut {old}→{deaf}: node {leader} leads term {term}");

    trio.heal();
    let (_, t, _) = converged(&trio, &mut el);
    assert!(t >= term);
}

#[test]
fn a_paused_leader_is_replaced_and_follows_the_new_one_when_it_resumes() {
    let _one = one_trio_at_a_time();
    let trio = ProxiedTrio::start();
    let mut el = Elections::default();
    let (old, t0) = formed(&trio, &mut el);

    trio.node(old).pause();
    let paused = Instant::now();
    let rest = others(old);
    let elected = poll(WAIT, "the two others electing a new leader", || {
        el.agreed(&trio, &rest).filter(|(l, _)| *l != old)
    });
    std::thread::sleep(QUIET.saturating_sub(paused.elapsed()));
    trio.node(old).resume();
    let (new, t1) = elected;
    assert!(
        t1 > t0,
        "new leader {new} in term {t1}, old {old} led term {t0}"
    );

    // It wakes up leading a stale term and learns better from the first answer it gets.
    poll(WAIT, "the resumed node following the new leader", || {
        let st = el.statuses(&trio, &[old])?.pop()?;
        (st.role(old) == "follower" && st.leader == Some(new)).then_some(())
    });
    let (leader, _, st) = converged(&trio, &mut el);
    assert_eq!(leader, new, "{}", st.raw);
}

#[test]
fn an_isolated_follower_does_not_change_the_leader_of_the_majority() {
    let _one = one_trio_at_a_time();
    let trio = ProxiedTrio::start();
    let mut el = Elections::default();
    let (leader, _) = formed(&trio, &mut el);
    // Every group's leader and term, as the majority sees them now.
    let (alone, before) = follower_of_all(&trio, &mut el, leader);
    let majority = others(alone);

    // First its links go silent; then its connections are gone too and new ones hang (a
    // host gone dark): the leader's dials to it must not hold up the other follower.
    let steady = |el: &mut Elections| {
        let until = Instant::now() + QUIET;
        while Instant::now() < until {
            for st in el.statuses(&trio, &majority).expect("the majority answers") {
                let now: Vec<_> = st.groups.iter().map(|g| (g.leader, g.term)).collect();
                let was: Vec<_> = before.iter().map(|g| (g.leader, g.term)).collect();
                assert_eq!(
                    now, was,
                    "node {} with node {alone} cut off: {}",
                    st.node, st.raw
                );
            }
            let st = el.statuses(&trio, &[alone]).and_then(|mut v| v.pop());
            if let Some(st) = st {
                assert_ne!(st.role(alone), "leader", "{}", st.raw);
            }
            std::thread::sleep(PACE);
        }
    };
    trio.isolate(alone);
    steady(&mut el);
    trio.reset(alone, true);
    trio.reset(alone, false);
    steady(&mut el);

    trio.heal();
    let (now, t, _) = converged(&trio, &mut el);
    eprintln!(
        "after healing: node {now} leads the metadata group in term {t} (before: {:?})",
        before[0]
    );
}

#[test]
fn a_follower_whose_requests_are_lost_gets_an_honest_answer_in_bounded_time() {
    let _one = one_trio_at_a_time();
    let trio = ProxiedTrio::start();
    let mut el = Elections::default();
    let (leader, _) = formed(&trio, &mut el);
    let st = el.statuses(&trio, &[leader]).and_then(|mut v| v.pop());
    let groups = st.expect("the leader answers").groups;
    let mute = others(leader)
        .into_iter()
        .find(|id| groups.iter().all(|g| g.leader != Some(*id)))
        .expect("a node that leads no group");
    let rest = others(mute);

    // It still hears every leader, and nothing it sends reaches one: what it asks is held
    // in the link and arrives when the link heals, as TCP would deliver it.
    for l in groups.iter().filter_map(|g| g.leader) {
        trio.cut(mute, l);
    }
    std::thread::sleep(Duration::from_secs(1));
    let me = mute.to_string();
    let out =
        trio.node(mute)
            .ctl_timeout(&["cluster", "leave", &me], None, Duration::from_secs(30));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("may or may not"), "{out:?}");

    // Healed, the operator runs it again, as told, and the cluster ends as asked: the node
    // is in no group, whatever the first request did when it arrived.
    trio.heal();
    let out =
        trio.node(rest[0])
            .ctl_timeout(&["cluster", "leave", &me], None, Duration::from_secs(30));
    assert_eq!(out.code, 0, "{out:?}");
    let (l, _) = poll(WAIT, "the two others leading every group", || {
        el.agreed(&trio, &rest)
    });
    let st = poll(WAIT, "the node gone from every group", || {
        let st = el.statuses(&trio, &[l])?.pop()?;
        let gone = st.raw["nodes"]
            .as_array()?
            .iter()
            .chain(
                st.raw["groups"]
                    .as_array()?
                    .iter()
                    .flat_map(|g| g["replicas"].as_array().into_iter().flatten()),
            )
            .all(|n| n["id"].as_u64() != Some(mute) && n["node"].as_u64() != Some(mute));
        gone.then_some(st)
    });
    assert_eq!(st.role(mute), "", "{}", st.raw);
}

/// A follower cut off while the others commit large entries (40 MB of 500 KB messages)
/// catches up once healed. A replication request carries about 2 MiB of entries: sent 32
/// at a time, as openraft would, each request was tens of MB, took longer than the
/// heartbeat interval openraft gives it, timed out and was sent again whole, and the
/// follower never caught up.
#[test]
fn a_follower_cut_off_during_large_publishes_catches_up_once_healed() {
    let _one = one_trio_at_a_time();
    let trio = ProxiedTrio::start();
    let mut el = Elections::default();
    let (leader, _) = formed(&trio, &mut el);
    let (alone, _) = follower_of_all(&trio, &mut el, leader);
    trio.isolate(alone);
    let line = "y".repeat(500_000);
    let input: String = (0..80).map(|i| format!("{i}-{line}\n")).collect();
    // Through a node of the majority: one publish at a time, each several entries.
    let via = others(alone)[0];
    for chunk in input.lines().collect::<Vec<_>>().chunks(8) {
        let body = chunk.join("\n") + "\n";
        trio.node(via)
            .ctl_ok(&["publish", "big.t", "-q"], Some(body.as_bytes()));
    }
    trio.heal();
    let (_, _, st) = converged(&trio, &mut el);
    assert_eq!(st.lag(alone), Some(0), "{}", st.raw);
    let got = common::cluster::all_lines(trio.node(alone), "big.t", 80);
    assert_eq!(got.len(), 80);
    for (i, l) in got.iter().enumerate() {
        assert!(
            l.starts_with(&format!("{i}-y")),
            "message {i} on node {alone}"
        );
    }
}
