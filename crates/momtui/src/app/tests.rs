//! State tests: keys, network events and ticks in, state and commands out; no terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mom_proto::{ClientInfo, QueueInfo, Sender, Stats, TopicInfo};

use super::input::{Confirm, PayloadView};
use super::*;

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn ch(c: char) -> Event {
    key(KeyCode::Char(c))
}

fn ctrl(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn typed(a: &mut App, s: &str) {
    for c in s.chars() {
        a.update(ch(c));
    }
}

pub fn msg(topic: &str, seq: u64, payload: &str) -> Message {
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
        key: None,
        payload: payload.as_bytes().to_vec().into(),
        delivery: None,
    }
}

fn msgs(range: std::ops::RangeInclusive<u64>) -> Vec<Message> {
    range.map(|i| msg("t", i, &format!("m{i}"))).collect()
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
        time: 1_795_596_652_000,
        topics: vec![
            topic("metrics.cpu", 1000, 250.0),
            topic("orders.eu", 42, 1.0),
            topic("audit", 7, 0.0),
        ],
        queues: vec![
            QueueInfo {
                name: "billing".into(),
                owner: "anonymous".into(),
                bindings: vec!["orders.*".into()],
                ready: 3,
                unacked: 1,
                lag: 4,
                consumers: 1,
                max_deliver: 5,
                ack_wait_ms: 30_000,
                ..QueueInfo::default()
            },
            QueueInfo {
                name: "audit-log".into(),
                owner: "anonymous".into(),
                bindings: vec!["audit".into()],
                ready: 7,
                lag: 7,
                dead_lettered: 2,
                ..QueueInfo::default()
            },
        ],
        clients: vec![ClientInfo {
            client_id: 4,
            name: "momctl publish".into(),
            user: "anonymous".into(),
            addr: "127.0.0.1:50432".into(),
            watches: 1,
            watch_patterns: vec!["orders.>".into()],
            ..ClientInfo::default()
        }],
        ..Stats::default()
    }
}

fn app() -> App {
    let mut a = App::new("127.0.0.1:7878", 5, false);
    a.update(Event::Net(NetEvent::Stats(Box::new(sample_stats()))));
    a
}

fn stream(a: &mut App, sample: Vec<Message>) {
    let n = sample.len() as u64;
    a.update(Event::Net(NetEvent::Messages {
        sample,
        total: n,
        skipped: 0,
    }));
}

fn selected_seq(a: &App) -> Option<u64> {
    a.selected_message().map(|m| m.seq)
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
fn the_sample_keeps_the_newest_message_however_many_arrive() {
    let mut s = Sampler::new(200);
    s.add(msgs(1..=150));
    s.add(msgs(151..=400));
    s.add(msgs(401..=401));
    let (sample, total, _) = s.take();
    assert_eq!(total, 401);
    assert_eq!(sample.len(), 200);
    assert_eq!(
        sample.last().map(|m| m.seq),
        Some(401),
        "the newest is shown"
    );
    assert_eq!(sample.first().map(|m| m.seq), Some(202));
    // One batch bigger than the sample.
    s.add(msgs(1..=1000));
    let (sample, total, _) = s.take();
    assert_eq!((total, sample.len()), (1000, 200));
    assert_eq!(sample.last().map(|m| m.seq), Some(1000));
    assert!(s.is_empty(), "taking starts over");
}

#[test]
fn the_stream_shows_the_newest_first_and_is_bounded() {
    let mut a = app();
    stream(&mut a, msgs(1..=8));
    assert_eq!(a.stream.buf.len(), 5, "bounded by the buffer");
    assert_eq!(a.stream_rows()[0].seq, 8, "newest on top");
    assert_eq!(a.stream.total, 8);
}

#[test]
fn the_selection_stays_on_its_message_while_new_ones_arrive() {
    let mut a = App::new("x", 100, false);
    stream(&mut a, msgs(1..=10));
    a.update(ch('4'));
    assert_eq!(selected_seq(&a), Some(10), "following the newest");
    a.update(ch('j'));
    a.update(ch('j'));
    assert_eq!(selected_seq(&a), Some(8));
    assert!(
        a.stream.paused && a.stream.auto_paused,
        "moving pauses the stream"
    );
    stream(&mut a, msgs(11..=20));
    assert_eq!(selected_seq(&a), Some(8), "still the same message");
    assert_eq!(a.stream.held.len(), 10);
    assert!(a.stream.note().contains("10 new"));
    // Resuming shows what was held and follows the newest again.
    a.update(ch(' '));
    assert!(!a.stream.paused);
    assert_eq!(a.stream_rows()[0].seq, 20);
    assert_eq!(selected_seq(&a), Some(20));
    // Enter opens the message under the cursor, whatever arrived since.
    for _ in 0..12 {
        a.update(ch('j'));
    }
    assert_eq!(selected_seq(&a), Some(8));
    stream(&mut a, msgs(21..=30));
    a.update(key(KeyCode::Enter));
    assert!(matches!(&a.mode, Mode::Detail { msg, .. } if msg.seq == 8));
    a.update(key(KeyCode::Esc));
    // g: back to the newest, following again.
    a.update(ch('g'));
    stream(&mut a, msgs(31..=31));
    assert_eq!(selected_seq(&a), Some(31));
}

#[test]
fn table_selection_follows_its_row_when_sorting_and_when_rows_come_and_go() {
    let mut a = app();
    a.update(ch('j'));
    assert_eq!(a.selected_topic().as_deref(), Some("metrics.cpu"));
    a.update(ch('M')); // sort by MSGS, biggest first
    assert_eq!(a.topics()[0].name, "metrics.cpu");
    assert_eq!(a.selected_topic().as_deref(), Some("metrics.cpu"));
    let mut s = sample_stats();
    s.topics.insert(
        0,
        TopicInfo {
            name: "zz.new".into(),
            messages: 5000,
            ..TopicInfo::default()
        },
    );
    a.update(Event::Net(NetEvent::Stats(Box::new(s))));
    assert_eq!(a.topics()[0].name, "zz.new");
    assert_eq!(a.selected_topic().as_deref(), Some("metrics.cpu"));
}

#[test]
fn sorting_by_any_column_is_remembered_per_pane() {
    let mut a = app();
    let names = |a: &App| {
        a.topics()
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&a), ["audit", "metrics.cpu", "orders.eu"], "by name");
    a.update(ch('I'));
    assert_eq!(
        names(&a),
        ["metrics.cpu", "orders.eu", "audit"],
        "IN/S, fastest first"
    );
    a.update(ch('I'));
    assert_eq!(
        names(&a),
        ["audit", "orders.eu", "metrics.cpu"],
        "again: reversed"
    );
    a.update(ch('S'));
    assert_eq!(names(&a)[0], "metrics.cpu");
    a.update(ch('s'));
    assert_eq!(a.view(Pane::Topics).sort.col, 5, "s: the next column");
    a.update(ch('2'));
    a.update(ch('L')); // LAG
    assert_eq!(a.queues()[0].name, "audit-log");
    a.update(ch('1'));
    assert_eq!(a.view(Pane::Topics).sort.col, 5, "each pane keeps its own");
    assert_eq!(a.view(Pane::Subscriptions).sort.col, 7);
}

#[test]
fn each_pane_has_its_own_case_insensitive_filter_with_a_regex_option() {
    let mut a = app();
    a.update(ch('/'));
    typed(&mut a, "ORD");
    assert_eq!(a.topics().len(), 1);
    a.update(key(KeyCode::Enter));
    assert_eq!(a.mode, Mode::Normal);
    a.update(ch('2'));
    assert_eq!(
        a.queues().len(),
        2,
        "pane 2 is not filtered by pane 1's filter"
    );
    a.update(ch('/'));
    a.update(ctrl('r'));
    typed(&mut a, "^aud");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.queues().len(), 1);
    assert!(a.view(Pane::Subscriptions).filter.regex);
    assert_eq!(a.view(Pane::Subscriptions).filter.note(), "[regex: ^aud] ");
    a.update(ch('1'));
    assert_eq!(a.topics().len(), 1);
    a.update(key(KeyCode::Esc));
    assert_eq!(a.topics().len(), 3);
    // An unfinished regex matches everything and says why.
    a.update(ch('/'));
    a.update(ctrl('r'));
    typed(&mut a, "(");
    assert_eq!(a.topics().len(), 3);
    assert!(a.view(Pane::Topics).filter.error.is_some());
}

#[test]
fn every_way_of_changing_the_stream_asks_for_one_watch() {
    let mut a = app();
    let one = |cmds: Vec<Command>, pattern: &str, from: StartAt| {
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(
            matches!(&cmds[0], Command::Watch { pattern: p, from: f, .. } if p == pattern && *f == from),
            "{cmds:?}"
        );
    };
    one(a.update(key(KeyCode::Enter)), "audit", StartAt::New);
    assert_eq!(a.pane, Pane::Stream);
    a.update(ch('1'));
    one(a.update(ch('r')), "audit", StartAt::All);
    a.update(ch('w'));
    a.update(ctrl('u'));
    typed(&mut a, "orders.>");
    one(a.update(key(KeyCode::Enter)), "orders.>", StartAt::New);
    a.update(ch(':'));
    typed(&mut a, "watch metrics.>");
    one(a.update(key(KeyCode::Enter)), "metrics.>", StartAt::New);
    // The broker's answer starts the stream over.
    stream(&mut a, msgs(1..=3));
    a.update(Event::Net(NetEvent::Watching("metrics.>".into())));
    assert!(a.stream.buf.is_empty());
    assert_eq!(a.stream.pattern, "metrics.>");
}

#[test]
fn status_messages_expire_and_the_hints_return() {
    let mut a = app();
    a.update(Event::Tick(1_000_000));
    a.update(ch(' '));
    assert!(a.status.is_some());
    a.update(Event::Tick(1_004_000));
    assert!(a.status.is_some());
    a.update(Event::Tick(1_005_001));
    assert!(a.status.is_none());
}

#[test]
fn the_command_line_jumps_watches_and_publishes() {
    let mut a = app();
    let run = |a: &mut App, line: &str| {
        a.update(ch(':'));
        typed(a, line);
        a.update(key(KeyCode::Enter))
    };
    let cmds = run(&mut a, "queue billing");
    assert_eq!(cmds, vec![Command::PeekQueue("billing".into())]);
    assert!(matches!(&a.drill, Some(Drill::Queue(q)) if q.name == "billing"));
    run(&mut a, "topics");
    assert_eq!((a.pane, a.drill.is_none()), (Pane::Topics, true));
    run(&mut a, "publish orders.us");
    assert!(matches!(&a.mode, Mode::Publish(f) if f.topic.text == "orders.us"));
    a.update(key(KeyCode::Esc));
    run(&mut a, "sort msgs");
    assert_eq!(a.topics()[0].name, "metrics.cpu");
    run(&mut a, "nonsense");
    assert!(a.status.as_ref().is_some_and(|s| s.error));
    run(&mut a, "q");
    assert!(a.quit);
}

#[test]
fn a_refused_publish_keeps_the_text_and_the_fields_are_remembered() {
    let mut a = app();
    a.update(ch('p'));
    typed(&mut a, "hello");
    a.update(key(KeyCode::BackTab));
    typed(&mut a, "order-1");
    a.update(key(KeyCode::BackTab));
    typed(&mut a, "k=v, trace=1");
    let cmds = a.update(key(KeyCode::Enter));
    let Command::Publish {
        topic,
        headers,
        payload,
        msg_id,
    } = &cmds[0]
    else {
        panic!("{cmds:?}");
    };
    assert_eq!((topic.as_str(), payload.as_str()), ("audit", "hello"));
    assert_eq!(headers.get("trace").map(String::as_str), Some("1"));
    assert_eq!(msg_id.as_deref(), Some("order-1"));
    assert_eq!(a.mode, Mode::Normal);
    a.update(Event::Net(NetEvent::Published(Err(
        "forbidden: topic $sys.x is reserved".into(),
    ))));
    let Mode::Publish(f) = &a.mode else {
        panic!("the dialog comes back: {:?}", a.mode);
    };
    assert_eq!(f.payload.text, "hello");
    assert!(f.error.as_deref().is_some_and(|e| e.contains("reserved")));
    a.update(key(KeyCode::Esc));
    // Topic, headers and msg id are remembered; the payload starts empty.
    a.update(ch('p'));
    let Mode::Publish(f) = &a.mode else { panic!() };
    assert_eq!(
        (
            f.topic.text.as_str(),
            f.headers.text.as_str(),
            f.msg_id.text.as_str()
        ),
        ("audit", "k=v, trace=1", "order-1")
    );
    assert_eq!(f.payload.text, "");
}

#[test]
fn a_queue_drill_down_peeks_and_asks_before_acting() {
    let mut a = app();
    a.update(ch('2'));
    let cmds = a.update(key(KeyCode::Enter));
    assert_eq!(cmds, vec![Command::PeekQueue("audit-log".into())]);
    a.update(Event::Net(NetEvent::Peeked {
        queue: "audit-log".into(),
        result: Ok(msgs(1..=3)),
    }));
    a.update(ch('j'));
    // A renewed peek keeps the cursor on its message.
    a.update(Event::Net(NetEvent::Peeked {
        queue: "audit-log".into(),
        result: Ok(msgs(2..=4)),
    }));
    a.update(key(KeyCode::Enter));
    assert!(matches!(&a.mode, Mode::Detail { msg, .. } if msg.seq == 2));
    a.update(key(KeyCode::Esc));
    a.update(ch('r'));
    assert_eq!(
        a.mode,
        Mode::Confirm(Confirm::RedriveQueue("audit-log".into()))
    );
    assert_eq!(
        a.update(ch('y')),
        vec![Command::RedriveQueue("audit-log".into())]
    );
    // Done: the peek is renewed.
    let cmds = a.update(Event::Net(NetEvent::Done(Ok(
        "2 dead letters went back".into()
    ))));
    assert_eq!(cmds, vec![Command::PeekQueue("audit-log".into())]);
    a.update(ch('P'));
    assert!(a.update(ch('n')).is_empty());
    a.update(ch('D'));
    assert_eq!(
        a.update(ch('y')),
        vec![Command::DeleteQueue {
            name: "audit-log".into(),
            force: true
        }]
    );
    assert!(a.drill.is_none(), "a deleted queue's detail closes");
}

#[test]
fn a_client_drill_down_closes_the_connection_after_asking() {
    let mut a = app();
    a.update(ch('3'));
    a.update(key(KeyCode::Enter));
    assert!(matches!(&a.drill, Some(Drill::Client(c)) if c.id == 4));
    // Enter on a watch streams its pattern.
    let cmds = a.update(key(KeyCode::Enter));
    assert!(matches!(&cmds[..], [Command::Watch { pattern, .. }] if pattern == "orders.>"));
    a.update(ch('3'));
    a.update(ch('x'));
    assert!(matches!(
        &a.mode,
        Mode::Confirm(Confirm::CloseClient { id: 4, .. })
    ));
    assert_eq!(a.update(ch('y')), vec![Command::CloseClient(4)]);
}

#[test]
fn topic_purge_and_delete_ask_first() {
    let mut a = app();
    a.update(ch('P'));
    assert_eq!(a.mode, Mode::Confirm(Confirm::PurgeTopic("audit".into())));
    assert_eq!(a.update(ch('y')), vec![Command::PurgeTopic("audit".into())]);
    a.update(ch('d'));
    assert!(a.update(key(KeyCode::Esc)).is_empty());
    a.update(ch('D'));
    assert_eq!(
        a.update(ch('y')),
        vec![Command::DeleteTopic {
            name: "audit".into(),
            force: true
        }]
    );
}

#[test]
fn saving_writes_the_marked_messages_or_the_whole_stream() {
    let mut a = App::new("x", 100, false);
    stream(&mut a, msgs(1..=4));
    a.update(ch('4'));
    a.update(ctrl('s'));
    assert!(matches!(
        &a.mode,
        Mode::Prompt {
            kind: PromptKind::Save,
            ..
        }
    ));
    a.update(ctrl('u'));
    typed(&mut a, "out.jsonl");
    let cmds = a.update(key(KeyCode::Enter));
    let [Command::Save { path, lines }] = &cmds[..] else {
        panic!("{cmds:?}");
    };
    assert_eq!((path.as_str(), lines.len()), ("out.jsonl", 4));
    assert!(lines[0].contains("\"seq\":1"), "oldest first: {}", lines[0]);
    a.update(ch('m'));
    a.update(ch('j'));
    a.update(ch('m'));
    let Some(Command::Save { lines, .. }) = a.save(":unused").pop() else {
        panic!()
    };
    assert_eq!(lines.len(), 2, "only the marked");
}

#[test]
fn the_message_detail_scrolls_switches_view_and_copies() {
    let mut a = App::new("x", 100, false);
    stream(&mut a, vec![msg("t", 1, "{\"b\":1,\"a\":2}")]);
    a.update(ch('4'));
    a.update(key(KeyCode::Enter));
    a.update(ch('j'));
    a.update(ch('v'));
    assert!(matches!(
        &a.mode,
        Mode::Detail {
            view: PayloadView::Text,
            scroll: 0,
            ..
        }
    ));
    a.update(ch('y'));
    assert_eq!(a.clipboard.as_deref(), Some("{\"b\":1,\"a\":2}"));
    a.update(key(KeyCode::Esc));
    assert_eq!(a.mode, Mode::Normal);
}

#[test]
fn an_outage_marks_the_figures_stale() {
    let mut a = app();
    a.update(Event::Net(NetEvent::Connected {
        welcome: Box::new(mom_proto::Welcome {
            id: 0,
            version: 1,
            server_version: "0".into(),
            server_id: "s".into(),
            client_id: 9,
            user: "anonymous".into(),
            max_frame: 1,
            max_payload: 1,
            max_inflight: 1,
            cluster_id: String::new(),
        }),
        server: "127.0.0.1:7878".into(),
    }));
    assert!(!a.stale());
    a.update(Event::Net(NetEvent::Disconnected {
        attempt: 2,
        reason: "connection refused".into(),
    }));
    assert!(matches!(a.conn, Conn::Reconnecting { attempt: 2, .. }));
    assert!(a.stale());
    for _ in 0..40 {
        a.update(Event::Net(NetEvent::Stats(Box::new(sample_stats()))));
    }
    assert_eq!(a.history["metrics.cpu"].len(), SPARK_LEN);
}

#[test]
fn client_rates_come_from_the_change_of_their_counters() {
    let mut a = app();
    let mut s = sample_stats();
    s.time += 2_000;
    s.clients[0].msgs_in = 100;
    a.update(Event::Net(NetEvent::Stats(Box::new(s))));
    assert_eq!(a.client_rates[&4].in_rate, 50.0);
}

#[test]
fn quit_on_q_and_ctrl_c() {
    let mut a = app();
    a.update(ch('q'));
    assert!(a.quit);
    let mut a = app();
    a.update(ctrl('c'));
    assert!(a.quit);
}

#[test]
fn a_queue_detail_changes_settings_from_the_command_line() {
    let mut a = app();
    a.update(ch('2'));
    a.update(key(KeyCode::Enter));
    a.update(ch('e'));
    typed(&mut a, "10s");
    let cmds = a.update(key(KeyCode::Enter));
    assert_eq!(
        cmds,
        vec![Command::SetQueue {
            name: "audit-log".into(),
            max_deliver: None,
            ack_wait_ms: Some(10_000)
        }]
    );
}

#[test]
fn a_prompt_offers_the_current_value_and_typing_replaces_it() {
    let mut a = app();
    // The stream watches `>`; `w` offers it, and typing a pattern replaces it.
    a.update(ch('w'));
    typed(&mut a, "orders.>");
    let cmds = a.update(key(KeyCode::Enter));
    assert!(
        matches!(&cmds[..], [Command::Watch { pattern, .. }] if pattern == "orders.>"),
        "{cmds:?}"
    );
    // An edit key first keeps it: Backspace takes one character off the filter.
    a.update(ch('/'));
    typed(&mut a, "audit");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.view(a.pane).filter.text, "audit");
    a.update(ch('/'));
    a.update(key(KeyCode::Backspace));
    a.update(key(KeyCode::Enter));
    assert_eq!(a.view(a.pane).filter.text, "audi");
    // And typing replaces it.
    a.update(ch('/'));
    typed(&mut a, "metrics");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.view(a.pane).filter.text, "metrics");
}
