//! Cluster faults end to end, on the fault proxy of `common/proxy.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::proxy::{Dir, Flow, Proxy};

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
    let proxy = Proxy::start(upstream);
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
}
