use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mom_proto::{QueueInfo, Sender, Stats, TopicInfo};

use super::*;

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn ch(c: char) -> Event {
    key(KeyCode::Char(c))
}

fn msg(topic: &str, seq: u64, payload: &str) -> Message {
    Message {
        topic: topic.into(),
        seq,
        time: 1_795_000_000_000 + seq,
        headers: Default::default(),
        sender: Sender {
            user: "anonymous".into(),
            client: 4,
            name: "momctl".into(),
        },
        msg_id: None,
        payload: payload.as_bytes().to_vec().into(),
        delivery: None,
    }
}

pub fn sample_stats() -> Stats {
    let topic = |name: &str, n: u64, rate: f64| TopicInfo {
        name: name.into(),
        messages: n,
        bytes: n * 10,
        first_seq: 1,
        last_seq: n,
        in_rate: rate,
        ..TopicInfo::default()
    };
    Stats {
        topics: vec![
            topic("metrics.cpu", 1000, 250.0),
            topic("orders.eu", 42, 1.0),
        ],
        queues: vec![QueueInfo {
            name: "billing".into(),
            owner: "anonymous".into(),
            bindings: vec!["orders.*".into()],
            ready: 3,
            unacked: 1,
            lag: 4,
            consumers: 1,
            ..QueueInfo::default()
        }],
        ..Stats::default()
    }
}

fn app() -> App {
    let mut a = App::new("127.0.0.1:7878", 5, false);
    a.update(Event::Net(NetEvent::Stats(Box::new(sample_stats()))));
    a
}

#[test]
fn panes_switch_with_tab_and_numbers() {
    let mut a = app();
    assert_eq!(a.pane, Pane::Topics);
    a.update(key(KeyCode::Tab));
    assert_eq!(a.pane, Pane::Subscriptions);
    a.update(key(KeyCode::BackTab));
    a.update(key(KeyCode::BackTab));
    assert_eq!(a.pane, Pane::Stream);
    a.update(ch('3'));
    assert_eq!(a.pane, Pane::Clients);
}

#[test]
fn selection_moves_and_stays_in_bounds() {
    let mut a = app();
    a.update(ch('j'));
    a.update(ch('j'));
    a.update(ch('j'));
    assert_eq!(a.selected(Pane::Topics), 1);
    assert_eq!(a.selected_topic().as_deref(), Some("orders.eu"));
    a.update(ch('g'));
    assert_eq!(a.selected_topic().as_deref(), Some("metrics.cpu"));
}

#[test]
fn filter_narrows_the_table_and_esc_clears_it() {
    let mut a = app();
    a.update(ch('/'));
    for c in "ord".chars() {
        a.update(ch(c));
    }
    assert_eq!(a.topics().len(), 1);
    a.update(key(KeyCode::Enter));
    assert_eq!(a.mode, Mode::Normal);
    assert_eq!(a.filter, "ord");
    a.update(key(KeyCode::Esc));
    assert_eq!(a.topics().len(), 2);
}

#[test]
fn enter_on_a_topic_streams_it() {
    let mut a = app();
    let cmds = a.update(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        vec![Command::Watch {
            pattern: "metrics.cpu".into(),
            from: StartAt::New,
            at: 0
        }]
    );
    assert_eq!(a.pane, Pane::Stream);
    let cmds = {
        a.update(ch('1'));
        a.update(ch('r'))
    };
    assert_eq!(
        cmds,
        vec![Command::Watch {
            pattern: "metrics.cpu".into(),
            from: StartAt::All,
            at: 0
        }]
    );
}

#[test]
fn stream_is_bounded_and_pause_keeps_counting() {
    let mut a = app();
    let sample: Vec<Message> = (1..=8).map(|i| msg("t", i, "x")).collect();
    a.update(Event::Net(NetEvent::Messages {
        sample,
        total: 1000,
        skipped: 0,
    }));
    assert_eq!(a.stream.len(), 5, "bounded by the buffer");
    assert_eq!(a.stream.back().map(|m| m.seq), Some(8));
    assert_eq!(a.stream_total, 1000);
    a.update(ch(' '));
    assert!(a.paused);
    a.update(Event::Net(NetEvent::Messages {
        sample: vec![msg("t", 9, "y")],
        total: 50,
        skipped: 7,
    }));
    assert_eq!(a.stream_skipped, 7);
    assert_eq!(a.stream_total, 1050, "counters keep moving while paused");
    assert_eq!(
        a.stream.back().map(|m| m.seq),
        Some(8),
        "the list stands still"
    );
    a.update(ch(' '));
    assert!(!a.paused);
}

#[test]
fn detail_opens_on_enter_in_the_stream() {
    let mut a = app();
    a.update(Event::Net(NetEvent::Messages {
        sample: vec![msg("t", 1, "{\"a\":1}")],
        total: 1,
        skipped: 0,
    }));
    a.update(ch('4'));
    a.update(key(KeyCode::Enter));
    assert!(matches!(&a.mode, Mode::Detail(m) if m.seq == 1));
    a.update(key(KeyCode::Esc));
    assert_eq!(a.mode, Mode::Normal);
}

#[test]
fn publish_dialog_sends_topic_headers_and_payload() {
    let mut a = app();
    a.update(ch('p'));
    for c in "hello".chars() {
        a.update(ch(c));
    }
    a.update(key(KeyCode::BackTab));
    for c in "k=v, trace=1".chars() {
        a.update(ch(c));
    }
    let cmds = a.update(key(KeyCode::Enter));
    let Command::Publish {
        topic,
        headers,
        payload,
    } = &cmds[0]
    else {
        panic!("{cmds:?}");
    };
    assert_eq!((topic.as_str(), payload.as_str()), ("metrics.cpu", "hello"));
    assert_eq!(headers.get("trace").map(String::as_str), Some("1"));
    assert_eq!(a.mode, Mode::Normal);
    a.update(Event::Net(NetEvent::Done(Ok(
        "published to metrics.cpu at seq 1001".into(),
    ))));
    assert!(a.status.contains("seq 1001"));
}

#[test]
fn queue_actions_ask_first() {
    let mut a = app();
    a.update(ch('2'));
    a.update(ch('P'));
    assert_eq!(a.mode, Mode::Confirm(Confirm::PurgeQueue("billing".into())));
    assert!(a.update(ch('n')).is_empty());
    a.update(ch('d'));
    let cmds = a.update(ch('y'));
    assert_eq!(
        cmds,
        vec![Command::DeleteQueue {
            name: "billing".into(),
            force: false
        }]
    );
    a.update(Event::Net(NetEvent::Done(Err(
        "conflict: queue \"billing\" still holds 4 messages".into(),
    ))));
    assert!(a.status.starts_with("error: conflict"));
}

#[test]
fn quit_on_q_and_ctrl_c() {
    let mut a = app();
    a.update(ch('q'));
    assert!(a.quit);
    let mut a = app();
    a.update(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(a.quit);
}

#[test]
fn reconnecting_is_shown_and_history_feeds_the_sparkline() {
    let mut a = app();
    a.update(Event::Net(NetEvent::Disconnected {
        attempt: 2,
        reason: "connection refused".into(),
    }));
    assert!(matches!(a.conn, Conn::Reconnecting { attempt: 2, .. }));
    for _ in 0..40 {
        a.update(Event::Net(NetEvent::Stats(Box::new(sample_stats()))));
    }
    assert_eq!(a.history["metrics.cpu"].len(), SPARK_LEN);
}
