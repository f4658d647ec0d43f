//! A raw protocol connection for clients that misbehave on purpose: frames written by hand
//! with `mom_proto`, half frames, floods, and sockets never read.

use std::time::Duration;

use bytes::BytesMut;
use mom_proto::{ClientFrame, Hello, ServerFrame, Welcome, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// What `Raw::read_frame` got.
#[derive(Debug)]
pub enum Read1 {
    Frame(Box<ServerFrame>),
    /// The server closed the connection.
    Closed,
    Timeout,
    /// The server sent something that is not a frame of the protocol.
    Bad(String),
}

/// A whole frame (length prefix and body).
pub fn frame_bytes(f: &ClientFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    // Only values MessagePack cannot hold fail to encode; ours are plain.
    if mom_proto::encode_frame(f, &mut buf, usize::MAX).is_err() {
        return Vec::new();
    }
    buf.to_vec()
}

/// A frame around any body bytes.
pub fn frame_of_body(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 4);
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn hello_frame(name: &str) -> ClientFrame {
    ClientFrame::Hello(Hello {
        id: 1,
        version: PROTOCOL_VERSION,
        client: name.into(),
        ..Hello::default()
    })
}

impl Raw {
    pub async fn connect(addr: &str) -> std::io::Result<Raw> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
        let _ = stream.set_nodelay(true);
        Ok(Raw {
            stream,
            buf: BytesMut::new(),
        })
    }

    pub async fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b).await
    }

    pub async fn send(&mut self, f: &ClientFrame) -> std::io::Result<()> {
        self.send_bytes(&frame_bytes(f)).await
    }

    /// Say hello and wait (up to 10 s) for the welcome.
    pub async fn hello(&mut self, name: &str) -> anyhow::Result<Welcome> {
        self.send(&hello_frame(name)).await?;
        match self.read_frame(Duration::from_secs(10)).await {
            Read1::Frame(f) => match *f {
                ServerFrame::Welcome(w) => Ok(w),
                other => anyhow::bail!("expected welcome, got {other:?}"),
            },
            other => anyhow::bail!("expected welcome, got {other:?}"),
        }
    }

    /// The next frame from the server, waiting at most `timeout`.
    pub async fn read_frame(&mut self, timeout: Duration) -> Read1 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match mom_proto::split_frame(&mut self.buf, 64 * 1024 * 1024) {
                Ok(Some(body)) => {
                    return match mom_proto::decode_body::<ServerFrame>(&body) {
                        Ok(f) => Read1::Frame(Box::new(f)),
                        Err(e) => Read1::Bad(e.to_string()),
                    }
                }
                Ok(None) => {}
                Err(e) => return Read1::Bad(e.to_string()),
            }
            let mut chunk = [0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Read1::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Read1::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
