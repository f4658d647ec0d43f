//! The core refuses a new topic past the topic cap (`too_large`) or the user's creation
//! rate (`rate_limited`), changing nothing, while existing topics and the broker's own go on.

use bytes::Bytes;
use mom_proto::{PubMsg, Sender, TopicSet};

use super::*;

fn from(user: &str) -> Sender {
    Sender {
        user: user.into(),
        client: 1,
        name: "test".into(),
    }
}

fn msgs(payloads: &[&str]) -> Vec<PubMsg> {
    payloads
        .iter()
        .map(|p| PubMsg {
            payload: Bytes::copy_from_slice(p.as_bytes()),
            ..PubMsg::default()
        })
        .collect()
}

fn core(max_topics: u64, rate: u64, burst: u64) -> Core {
    let config = CoreConfig {
        creation: CreationLimits {
            max_topics,
            rate,
            burst,
        },
        ..CoreConfig::default()
    };
    Core::new(config, Topics::default(), Dedupe::default())
}

fn set(topic: &str) -> TopicSet {
    TopicSet {
        topic: topic.into(),
        max_msgs: Some(5),
        ..TopicSet::default()
    }
}

#[test]
fn past_the_cap_new_topics_are_refused_and_existing_ones_go_on() {
    let mut c = core(2, 0, 0);
    c.publish("a", msgs(&["1"]), from("u"), 1).unwrap();
    c.publish("b", msgs(&["1"]), from("u"), 1).unwrap();
    let e = c.publish("c", msgs(&["1"]), from("u"), 1).unwrap_err();
    assert!(
        matches!(e, CoreError::TooManyTopics { max: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_topics"), "{e}");
    assert!(c.topics.get("c").is_none());
    assert!(matches!(
        c.set_limits(&set("c"), 1, "u"),
        Err(CoreError::TooManyTopics { .. })
    ));
    // Existing topics take messages and limits as before.
    assert_eq!(
        c.publish("a", msgs(&["2"]), from("u"), 2).unwrap().seqs,
        [2]
    );
    assert!(c.set_limits(&set("b"), 2, "u").is_ok());
    // The broker's own topics are never refused.
    assert!(c
        .publish_any("$sys.events", msgs(&["e"]), from("$broker"), 2)
        .is_ok());
    // A removed topic makes room; a raised limit (a reload) too.
    c.remove_topic("a").unwrap();
    c.config.creation.max_topics = 4;
    assert!(c.publish("c", msgs(&["1"]), from("u"), 3).is_ok());
    assert!(c.publish("d", msgs(&["1"]), from("u"), 3).is_ok());
    assert!(
        c.admit_topic("$inbox.1.x", "u", 3).is_err(),
        "reply inboxes count"
    );
}

#[test]
fn past_the_rate_new_topics_are_refused_until_the_bucket_refills() {
    let mut c = core(0, 2, 2);
    c.publish("a", msgs(&["1"]), from("u"), 1000).unwrap();
    c.set_limits(&set("b"), 1000, "u").unwrap();
    let e = c.publish("c", msgs(&["1"]), from("u"), 1000).unwrap_err();
    assert_eq!(
        e,
        CoreError::CreateRate {
            name: "c".into(),
            user: "u".into(),
            rate: 2,
            burst: 2,
            retry_ms: 500
        }
    );
    assert!(e.to_string().contains("retry in 500 ms"), "{e}");
    // Other users, existing topics and reply inboxes are not held back.
    assert!(c.publish("c", msgs(&["1"]), from("v"), 1000).is_ok());
    assert!(c.publish("a", msgs(&["2"]), from("u"), 1000).is_ok());
    assert!(c.admit_topic("$inbox.1.x", "u", 1000).is_ok());
    // Half a second later the user may create one more.
    assert!(c.publish("d", msgs(&["1"]), from("u"), 1500).is_ok());
    assert!(c.publish("e", msgs(&["1"]), from("u"), 1500).is_err());
}

#[test]
fn a_refused_batch_does_not_count_against_the_rate() {
    let mut c = core(0, 1, 1);
    c.config.max_payload = 4;
    assert!(matches!(
        c.publish("a", msgs(&["too long"]), from("u"), 0),
        Err(CoreError::PayloadTooLarge { .. })
    ));
    assert!(c.publish("a", msgs(&["ok"]), from("u"), 0).is_ok());
}
