//! The machine's limits, measured with the same tool: how many fdatasyncs of one small
//! record the disk under the data dirs takes per second, and how many 128-byte
//! length-prefixed frames loopback TCP carries into a sink per second.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Append a 128-byte record and fdatasync it, over and over, for `secs`.
fn fdatasyncs(dir: &Path, secs: f64) -> Result<(u64, Duration)> {
    let path = dir.join("fdatasync.probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let record = [b'r'; 128];
    let (mut n, start) = (0u64, Instant::now());
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&record)?;
        // SAFETY: the descriptor is open for as long as `f` lives.
        if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
            bail!("fdatasync: {}", std::io::Error::last_os_error());
        }
        n += 1;
    }
    let took = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((n, took))
}

/// Frames of 4-byte big-endian length + 124 bytes (128 in all), written 64 KiB at a time
/// into a reader that parses and counts them, for `secs`.
async fn loopback(secs: f64) -> Result<(u64, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut have, mut frames) = (0usize, 0u64);
        loop {
            let got = s.read(&mut buf[have..]).await?;
            if got == 0 {
                return Ok::<_, anyhow::Error>(frames);
            }
            have += got;
            let mut at = 0;
            while have - at >= 4 {
                let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
                let end = at + 4 + len as usize;
                if end > have {
                    break;
                }
                frames += 1;
                at = end;
            }
            buf.copy_within(at..have, 0);
            have -= at;
        }
    });
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut chunk = Vec::with_capacity(64 * 1024);
    while chunk.len() + 128 <= 64 * 1024 {
        chunk.extend_from_slice(&124u32.to_be_bytes());
        chunk.extend_from_slice(&[b'x'; 124]);
    }
    let per_chunk = (chunk.len() / 128) as u64;
    let (mut sent, start) = (0u64, Instant::now());
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&chunk).await?;
        sent += per_chunk;
    }
    s.shutdown().await?;
    let got = sink.await??;
    let took = start.elapsed();
    if got != sent {
        bail!("the sink counted {got} frames of {sent}");
    }
    Ok((got, took))
}

pub async fn run(dir: &Path, secs: f64) -> Result<()> {
    let (syncs, t) = fdatasyncs(dir, secs)?;
    let per_sec = syncs as f64 / t.as_secs_f64();
    let (frames, t2) = loopback(secs).await?;
    println!(
        "{}",
        json!({
            "limits": {
                "fdatasync_per_sec": per_sec,
                "fdatasync_us": 1e6 / per_sec.max(1e-9),
                "loopback_frames_per_sec": frames as f64 / t2.as_secs_f64(),
                "loopback_mb_per_sec": frames as f64 * 128.0 / t2.as_secs_f64() / 1e6,
            }
        })
    );
    Ok(())
}
