//! Render tests: each screen drawn into a `TestBackend` and compared with its snapshot.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mom_proto::{ClientInfo, Message, Sender, Welcome};
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
        }),
    };
    let mut s = sample_stats();
    s.uptime_ms = 3_723_000;
    s.totals.topics = 2;
    s.totals.messages = 1042;
    s.totals.bytes = 10_420;
    s.totals.connections = 2;
    s.totals.in_rate = 251.0;
    s.totals.out_rate = 12.0;
    s.clients = vec![
        ClientInfo {
            client_id: 4,
            name: "momctl".into(),
            user: "anonymous".into(),
            addr: "127.0.0.1:50432".into(),
            since: 1_795_596_651_000,
            msgs_in: 1000,
            msgs_out: 0,
            watches: 0,
            watch_patterns: Vec::new(),
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

fn render(a: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("a test backend always opens");
    t.draw(|f| super::draw(f, a))
        .expect("drawing into memory cannot fail");
    t.backend().to_string()
}

#[test]
fn topics_screen() {
    let mut a = app();
    insta::assert_snapshot!("topics_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("topics_120x40", render(&mut a, 120, 40));
}

#[test]
fn wide_screen_shows_the_stream_beside() {
    let mut a = app();
    insta::assert_snapshot!("topics_200x60", render(&mut a, 200, 60));
}

#[test]
fn subscriptions_screen() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    insta::assert_snapshot!("subscriptions_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("subscriptions_120x40", render(&mut a, 120, 40));
}

#[test]
fn clients_screen() {
    let mut a = app();
    key(&mut a, KeyCode::Char('3'));
    insta::assert_snapshot!("clients_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("clients_120x40", render(&mut a, 120, 40));
}

#[test]
fn stream_screen() {
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    insta::assert_snapshot!("stream_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("stream_120x40", render(&mut a, 120, 40));
}

#[test]
fn detail_pretty_prints_json() {
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("detail_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("detail_120x40", render(&mut a, 120, 40));
}

#[test]
fn help_lists_every_key() {
    let mut a = app();
    key(&mut a, KeyCode::Char('?'));
    let screen = render(&mut a, 80, 24);
    for (k, _) in super::overlays::KEYS {
        assert!(screen.contains(k), "help is missing {k}");
    }
    insta::assert_snapshot!("help_80x24", screen);
    insta::assert_snapshot!("help_120x40", render(&mut a, 120, 40));
}

#[test]
fn publish_dialog() {
    let mut a = app();
    key(&mut a, KeyCode::Char('p'));
    for c in "{\"id\": 1}".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    insta::assert_snapshot!("publish_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("publish_120x40", render(&mut a, 120, 40));
}

#[test]
fn queue_dialogs() {
    let mut a = app();
    key(&mut a, KeyCode::Char('c'));
    for c in "jobs".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    insta::assert_snapshot!("create_queue_80x24", render(&mut a, 80, 24));
    key(&mut a, KeyCode::Esc);
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Char('d'));
    insta::assert_snapshot!("delete_queue_120x40", render(&mut a, 120, 40));
}

#[test]
fn reconnecting_is_shown_in_the_header() {
    let mut a = app();
    a.update(Event::Net(NetEvent::Disconnected {
        attempt: 3,
        reason: "connection refused".into(),
    }));
    let screen = render(&mut a, 120, 40);
    assert!(screen.contains("reconnecting (attempt 3): connection refused"));
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
    assert_eq!(a.selected_topic().as_deref(), Some("orders.eu"));
    a.update(Event::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        ..click(6)
    }));
    assert_eq!(a.selected_topic().as_deref(), Some("metrics.cpu"));
    // A click in another pane's table (wide screen: the stream on the right) moves there.
    render(&mut a, 200, 60);
    a.update(Event::Mouse(MouseEvent {
        column: 150,
        ..click(7)
    }));
    assert_eq!(a.pane, crate::app::Pane::Stream);
    assert_eq!(a.selected(crate::app::Pane::Stream), 2);
}
