//! Render tests: each screen drawn into a `TestBackend` and compared with its snapshot.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mom_proto::{
    ClientInfo, ClusterGroup, ClusterNode, ClusterReplica, ClusterStatus, Message, Sender, Welcome,
};

use crate::app::tests::msg;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::tests::sample_stats;
use crate::app::{App, Conn, Event, NetEvent};

fn app() -> App {
    let mut a = App::new("127.0.0.1:7878", 100, false);
    a.conn = Conn::Connected {
        welcome: Box::new(Welcome {
            id: 0,
            version: 1,
            server_version: "0.1.0".into(),
            server_id: "1dc176f07b9365fb".into(),
            client_id: 7,
            user: "anonymous".into(),
            max_frame: 8 << 20,
            max_payload: 1 << 20,
            max_inflight: 1024,
            cluster_id: String::new(),
        }),
        server: "127.0.0.1:7878".into(),
    };
    let mut s = sample_stats();
    // A range as wide as real ones: it must never be shown cut.
    s.topics[0].first_seq = 900_001;
    s.topics[0].last_seq = 1_000_000;
    s.topics[0].messages = 100_000;
    s.uptime_ms = 3_723_000;
    s.totals.topics = 3;
    s.totals.messages = 1042;
    s.totals.bytes = 10_420;
    s.totals.connections = 2;
    s.totals.in_rate = 251.0;
    s.totals.out_rate = 12.0;
    s.clients = vec![
        ClientInfo {
            client_id: 4,
            name: "momctl recv jobs".into(),
            user: "anonymous".into(),
            addr: "127.0.0.1:50432".into(),
            since: 1_795_596_651_000,
            msgs_in: 1000,
            msgs_out: 0,
            watches: 0,
            watch_patterns: Vec::new(),
            consumers: vec!["jobs".into()],
            omitted: 0,
        },
        ClientInfo {
            client_id: 7,
            name: "momtui".into(),
            user: "anonymous".into(),
            addr: "127.0.0.1:50440".into(),
            since: 1_795_596_652_000,
            msgs_in: 0,
            msgs_out: 12,
            watches: 1,
            watch_patterns: vec![">".into()],
            consumers: Vec::new(),
            omitted: 0,
        },
    ];
    for i in 0..12 {
        let mut t = s.clone();
        t.topics[0].in_rate = (i * 20) as f64;
        a.update(Event::Net(NetEvent::Stats(Box::new(t))));
    }
    let msgs = (1..=12)
        .map(|i| Message {
            topic: if i % 3 == 0 {
                "orders.eu".into()
            } else {
                "metrics.cpu".into()
            },
            seq: i,
            time: 1_795_596_652_000 + i * 250,
            headers: [("trace".to_string(), format!("t{i}"))].into(),
            sender: Sender {
                user: "anonymous".into(),
                client: 4,
                name: "momctl".into(),
            },
            msg_id: None,
            key: (i == 12).then(|| "order-42".to_string()),
            payload: if i == 12 {
                b"{\"id\": 42, \"items\": [1, 2]}".to_vec().into()
            } else {
                format!("cpu={}", i * 7).into_bytes().into()
            },
            delivery: None,
        })
        .collect();
    a.update(Event::Net(NetEvent::Watching(">".into())));
    a.update(Event::Net(NetEvent::Messages {
        sample: msgs,
        total: 12,
        skipped: 0,
    }));
    a
}

fn key(a: &mut App, c: KeyCode) {
    a.update(Event::Key(KeyEvent::new(c, KeyModifiers::NONE)));
}

fn typed(a: &mut App, s: &str) {
    for c in s.chars() {
        key(a, KeyCode::Char(c));
    }
}

fn render(a: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("a test backend always opens");
    t.draw(|f| super::draw(f, a))
        .expect("drawing into memory cannot fail");
    t.backend().to_string()
}

/// Snapshots of the screen at 80x24 and 200x60.
fn both(name: &str, a: &mut App) {
    insta::assert_snapshot!(format!("{name}_80x24"), render(a, 80, 24));
    insta::assert_snapshot!(format!("{name}_200x60"), render(a, 200, 60));
}

#[test]
fn topics_screen() {
    let mut a = app();
    both("topics", &mut a);
}

#[test]
fn a_long_seq_range_is_never_cut_and_cut_cells_end_in_an_ellipsis() {
    let mut a = app();
    let screen = render(&mut a, 80, 24);
    assert!(screen.contains("900001..1000000"), "{screen}");
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    let screen = render(&mut a, 60, 24);
    assert!(screen.contains('…'), "{screen}");
}

#[test]
fn topics_sorted_and_filtered() {
    let mut a = app();
    key(&mut a, KeyCode::Char('I'));
    key(&mut a, KeyCode::Char('/'));
    typed(&mut a, "S.");
    both("topics_sorted_filtered", &mut a);
}

#[test]
fn subscriptions_screen() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    both("subscriptions", &mut a);
}

#[test]
fn clients_screen() {
    let mut a = app();
    key(&mut a, KeyCode::Char('3'));
    both("clients", &mut a);
}

#[test]
fn stream_screen() {
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    both("stream", &mut a);
}

#[test]
fn stream_paused_with_a_mark_and_a_filter() {
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    key(&mut a, KeyCode::Char('j'));
    key(&mut a, KeyCode::Char('m'));
    key(&mut a, KeyCode::Char('/'));
    typed(&mut a, "cpu");
    key(&mut a, KeyCode::Enter);
    a.update(Event::Net(NetEvent::Messages {
        sample: vec![msg("metrics.cpu", 13, "cpu=91")],
        total: 1,
        skipped: 0,
    }));
    both("stream_paused", &mut a);
}

#[test]
fn detail_pretty_prints_json_in_key_order() {
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    key(&mut a, KeyCode::Enter);
    let screen = render(&mut a, 80, 24);
    let (id, items) = (
        screen.find("\"id\"").expect("id shown"),
        screen.find("\"items\"").expect("items shown"),
    );
    assert!(id < items, "keys keep their order");
    assert!(screen.contains("key      order-42"), "{screen}");
    both("detail", &mut a);
}

#[test]
fn detail_of_a_binary_payload_scrolls_to_its_end() {
    let mut a = app();
    let mut m = msg("blobs", 1, "");
    m.payload = (0..3072u32)
        .map(|i| (i % 251) as u8 | 0x80)
        .collect::<Vec<u8>>()
        .into();
    a.open_detail(m);
    key(&mut a, KeyCode::End);
    let screen = render(&mut a, 80, 24);
    assert!(screen.contains("00000bf0"), "the last hex line: {screen}");
    both("detail_hex_end", &mut a);
}

#[test]
fn help_lists_every_key_and_scrolls() {
    let mut a = app();
    key(&mut a, KeyCode::Char('?'));
    let screen = render(&mut a, 200, 60);
    for (k, _) in super::overlays::KEYS {
        assert!(screen.contains(k), "help is missing {k}");
    }
    both("help", &mut a);
    key(&mut a, KeyCode::Char('G'));
    insta::assert_snapshot!("help_scrolled_80x24", render(&mut a, 80, 24));
}

#[test]
fn publish_dialog() {
    let mut a = app();
    key(&mut a, KeyCode::Char('p'));
    typed(&mut a, "{\"id\": 1}");
    both("publish", &mut a);
    key(&mut a, KeyCode::Enter);
    a.update(Event::Net(NetEvent::Published(Err(
        "forbidden: topic \"$sys.x\" is reserved for the broker".into(),
    ))));
    both("publish_refused", &mut a);
}

#[test]
fn queue_dialogs() {
    let mut a = app();
    key(&mut a, KeyCode::Char('c'));
    typed(&mut a, "jobs");
    both("create_queue", &mut a);
    key(&mut a, KeyCode::Esc);
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Char('d'));
    both("delete_queue", &mut a);
}

#[test]
fn queue_detail() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Enter);
    let mut peek: Vec<Message> = (1..=3).map(|i| msg("orders.eu", i, "{\"n\": 1}")).collect();
    for (i, m) in peek.iter_mut().enumerate() {
        m.delivery = Some(i as u32);
    }
    a.update(Event::Net(NetEvent::Peeked {
        queue: "audit-log".into(),
        result: Ok(peek),
    }));
    both("queue_detail", &mut a);
    key(&mut a, KeyCode::Char('r'));
    both("redrive_confirm", &mut a);
}

#[test]
fn client_detail() {
    let mut a = app();
    key(&mut a, KeyCode::Char('3'));
    key(&mut a, KeyCode::Enter);
    // The worker: the queue it consumes.
    both("client_detail_worker", &mut a);
    key(&mut a, KeyCode::Esc);
    key(&mut a, KeyCode::Char('j'));
    key(&mut a, KeyCode::Enter);
    both("client_detail", &mut a);
    key(&mut a, KeyCode::Char('x'));
    both("close_client_confirm", &mut a);
}

#[test]
fn command_line_and_filter_prompt() {
    let mut a = app();
    key(&mut a, KeyCode::Char(':'));
    typed(&mut a, "queue billing");
    insta::assert_snapshot!("command_line_80x24", render(&mut a, 80, 24));
    key(&mut a, KeyCode::Esc);
    key(&mut a, KeyCode::Char('/'));
    a.update(Event::Key(KeyEvent::new(
        KeyCode::Char('r'),
        KeyModifiers::CONTROL,
    )));
    typed(&mut a, "^met");
    insta::assert_snapshot!("regex_filter_80x24", render(&mut a, 80, 24));
}

#[test]
fn an_outage_dims_and_blanks_the_figures() {
    let mut a = app();
    a.update(Event::Tick(1_795_596_700_000));
    a.update(Event::Net(NetEvent::Stats(Box::new(sample_stats()))));
    a.update(Event::Net(NetEvent::Disconnected {
        attempt: 3,
        reason: "connection refused".into(),
    }));
    a.update(Event::Tick(1_795_596_742_000));
    let screen = render(&mut a, 120, 40);
    assert!(screen.contains("reconnecting (attempt 3)"), "{screen}");
    assert!(screen.contains("connection refused"), "{screen}");
    assert!(screen.contains("figures from 42s ago"), "{screen}");
    both("outage", &mut a);
}

#[test]
fn a_click_selects_the_row_under_it_and_the_wheel_scrolls() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut a = app();
    render(&mut a, 80, 24);
    // Header 2 lines, tabs 1, border 1, column heads 1: the second topic is on row 6.
    let click = |row| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 10,
        row,
        modifiers: KeyModifiers::NONE,
    };
    a.update(Event::Mouse(click(6)));
    assert_eq!(a.selected_topic().as_deref(), Some("metrics.cpu"));
    a.update(Event::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        ..click(6)
    }));
    assert_eq!(a.selected_topic().as_deref(), Some("audit"));
    // A click in another pane's table (wide screen: the stream on the right) moves there.
    render(&mut a, 200, 60);
    a.update(Event::Mouse(MouseEvent {
        column: 150,
        ..click(7)
    }));
    assert_eq!(a.pane, crate::app::Pane::Stream);
    assert_eq!(a.selected(crate::app::Pane::Stream), 2);
}

#[test]
fn a_table_the_broker_holds_more_of_says_which_page() {
    let mut a = app();
    let mut s = sample_stats();
    s.totals.topics = 100_000;
    s.topics_next = Some("orders.eu".into());
    a.update(Event::Net(NetEvent::Stats(Box::new(s.clone()))));
    key(&mut a, KeyCode::Char(']'));
    a.update(Event::Net(NetEvent::Stats(Box::new(s))));
    let screen = render(&mut a, 80, 24);
    assert!(screen.contains("3 of 100000"), "{screen}");
    insta::assert_snapshot!("topics_second_page_80x24", screen);
}

fn node(id: u64, role: &str, contact: Option<u64>) -> ClusterNode {
    ClusterNode {
        id,
        addr: format!("127.0.0.{id}:780{id}"),
        peer_addr: format!("127.0.0.{id}:790{id}"),
        voter: true,
        role: role.into(),
        last_contact_ms: contact,
        version: "0.1.0".into(),
    }
}

fn replica(node: u64, matched: u64, lag: Option<u64>) -> ClusterReplica {
    ClusterReplica {
        node,
        matched: Some(matched),
        lag,
    }
}

/// Three nodes as node 3 sees them: node 1 leads the metadata group.
fn three_nodes() -> ClusterStatus {
    ClusterStatus {
        id: 0,
        mode: "cluster".into(),
        cluster_id: "demo".into(),
        node_id: 3,
        nodes: vec![
            node(1, "leader", Some(12)),
            node(2, "follower", Some(48)),
            node(3, "follower", None),
        ],
        groups: vec![ClusterGroup {
            name: "meta".into(),
            leader: Some(1),
            term: 2,
            last_index: 9,
            applied_index: 9,
            replicas: vec![
                replica(1, 9, Some(0)),
                replica(2, 9, Some(0)),
                replica(3, 9, Some(0)),
            ],
        }],
    }
}

/// The app with the cluster view open and `st` its last answer.
fn cluster_view(st: ClusterStatus) -> App {
    let mut a = app();
    key(&mut a, KeyCode::Char('n'));
    a.update(Event::Net(NetEvent::Cluster(Ok(Box::new(st)))));
    a
}

#[test]
fn cluster_view_shows_the_leader_each_node_and_each_replicas_lag() {
    let mut a = cluster_view(three_nodes());
    let screen = render(&mut a, 80, 24);
    for text in [
        "Cluster demo",
        "answered by node 3",
        "3 (leader 1, follower 2)",
        "3*",
        "127.0.0.2:7802",
        "12ms",
        "0.1.0",
        "meta",
        "1:0 2:0 3:0",
    ] {
        assert!(screen.contains(text), "{text:?} missing:\n{screen}");
    }
    both("cluster_leader", &mut a);
}

#[test]
fn cluster_view_shows_an_unreachable_node_behind_the_leader() {
    let mut st = three_nodes();
    // As the leader sees it: node 2 has not answered for 7.4 s, node 3 answers.
    st.node_id = 1;
    st.nodes[0].last_contact_ms = None;
    st.nodes[1].role = "unreachable".into();
    st.nodes[1].last_contact_ms = Some(7_400);
    st.nodes[2].last_contact_ms = Some(31);
    st.groups[0].term = 3;
    st.groups[0].last_index = 14;
    st.groups[0].applied_index = 14;
    st.groups[0].replicas = vec![
        replica(1, 14, Some(0)),
        replica(2, 9, Some(5)),
        replica(3, 14, Some(0)),
    ];
    let mut a = cluster_view(st);
    let screen = render(&mut a, 80, 24);
    for text in [
        "2    unreachable",
        "7.4s",
        "1:0 2:5 3:0",
        "(leader 1, follower 1, unreachable 1)",
    ] {
        assert!(screen.contains(text), "{text:?} missing:\n{screen}");
    }
    both("cluster_unreachable", &mut a);
}

#[test]
fn cluster_view_during_an_election_shows_no_leader_and_unknown_lags() {
    let mut st = three_nodes();
    for n in &mut st.nodes {
        n.role = "unknown".into();
    }
    st.nodes[2].role = "candidate".into();
    st.groups[0].leader = None;
    for r in &mut st.groups[0].replicas {
        (r.matched, r.lag) = (None, None);
    }
    let mut a = cluster_view(st);
    let screen = render(&mut a, 80, 24);
    for text in ["meta  none", "1:? 2:? 3:?", "(candidate 1, unknown 2)"] {
        assert!(screen.contains(text), "{text:?} missing:\n{screen}");
    }
}

#[test]
fn cluster_view_of_a_single_node_says_so() {
    let mut a = cluster_view(ClusterStatus {
        mode: "single".into(),
        ..ClusterStatus::default()
    });
    let screen = render(&mut a, 80, 24);
    assert!(
        screen.contains("single node (not in cluster mode)"),
        "{screen}"
    );
    both("cluster_single", &mut a);
    // Esc goes back to the pane it was opened over.
    key(&mut a, KeyCode::Esc);
    let screen = render(&mut a, 80, 24);
    assert!(screen.contains("Topics (3)"), "{screen}");
}
