//! Limits on creating topics answer at once (docs/protocol.md §4.2, "Creating topics"): past
//! `--max-topics` a new topic gets `too_large`, past `--topic-create-rate` `rate_limited`;
//! momctl exits 1 with the server's reason, and the topics that exist keep working.

mod common;

use std::time::Duration;

use common::{wait_for, Momd};

#[test]
fn past_the_topic_cap_a_new_topic_is_refused_and_the_others_go_on() {
    let m = Momd::start_with(&["--max-topics", "3"]);
    m.ctl_ok(&["publish", "a", "1", "-q"], None);
    // `a` and the broker's `$sys.events` (it told of `a`'s creation).
    assert_eq!(m.stats()["totals"]["topics"], 2);
    m.ctl_ok(&["publish", "b", "1", "-q"], None);

    let out = m.ctl(&["publish", "c", "1", "-q"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("too_large"), "{out:?}");
    assert!(
        out.stderr.contains("\"c\" was not created") && out.stderr.contains("max_topics"),
        "the reason names the topic and the limit: {out:?}"
    );
    assert_eq!(
        m.ctl(&["topic", "info", "c"], None).code,
        6,
        "nothing stored"
    );
    // `topic set` of a missing topic creates it: refused the same way.
    let out = m.ctl(&["topic", "set", "c", "--max-msgs", "5"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("max_topics"), "{out:?}");

    // Existing topics take messages and limits as before; the broker keeps serving.
    m.ctl_ok(&["publish", "a", "2", "-q"], None);
    m.ctl_ok(&["topic", "set", "b", "--max-msgs", "5"], None);
    assert_eq!(m.read_all_lines("a"), vec!["1", "2"]);

    // A removed topic makes room.
    m.ctl_ok(&["topic", "rm", "b"], None);
    m.ctl_ok(&["publish", "c", "1", "-q"], None);
    assert_eq!(m.read_all_lines("c"), vec!["1"]);
}

#[test]
fn past_the_creation_rate_a_new_topic_is_refused_until_later() {
    let m = Momd::start_with(&["--topic-create-rate", "1", "--topic-create-burst", "2"]);
    m.ctl_ok(&["publish", "t1", "x", "-q"], None);
    m.ctl_ok(&["publish", "t2", "x", "-q"], None);
    let out = m.ctl(&["publish", "t3", "x", "-q"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("rate_limited"), "{out:?}");
    assert!(
        out.stderr.contains("topic_create_rate") && out.stderr.contains("retry in"),
        "the reason names the limit and when to retry: {out:?}"
    );
    // Topics that exist are not held back.
    m.ctl_ok(&["publish", "t1", "y", "-q"], None);
    assert_eq!(m.read_all_lines("t1"), vec!["x", "y"]);
    // One more topic a second: a retry succeeds soon.
    wait_for(Duration::from_secs(20), "t3 to be created", || {
        (m.ctl(&["publish", "t3", "x", "-q"], None).code == 0).then_some(())
    });
    assert_eq!(m.read_all_lines("t3"), vec!["x"]);
}
