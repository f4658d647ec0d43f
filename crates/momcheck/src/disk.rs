//! A small filesystem for the data dir (a tmpfs, mounted by momcheck and unmounted when it
//! ends), and a filler file that fills it up.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// A tmpfs mounted at `path`; unmounted on drop (lazily if something still holds it).
pub struct Mount {
    path: PathBuf,
}

fn cpath(p: &Path) -> anyhow::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("a path with a NUL byte")
}

impl Mount {
    /// Mount a tmpfs of `size` bytes at `path` (an existing empty directory). Needs root
    /// (CAP_SYS_ADMIN) on Linux.
    pub fn tmpfs(path: &Path, size: u64) -> anyhow::Result<Mount> {
        if !cfg!(target_os = "linux") {
            bail!("a tmpfs mount needs Linux");
        }
        let target = cpath(path)?;
        let src = CString::new("tmpfs")?;
        let opts = CString::new(format!("size={size},mode=0700"))?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            bail!(
                "mount -t tmpfs -o size={size} {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Ok(target) = cpath(&self.path) else {
            return;
        };
        // SAFETY: umount2(2) of the mount this value made.
        let r = unsafe { libc::umount2(target.as_ptr(), 0) };
        if r != 0 {
            // SAFETY: as above; detach now, freed when the last user goes.
            let r = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            if r != 0 {
                eprintln!(
                    "momcheck: could not unmount {}: {}",
                    self.path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Fill the filesystem of `dir` with a file until a write fails for lack of space, then
/// give back `leave` bytes. Returns the file and its size.
pub fn fill(dir: &Path, leave: u64) -> anyhow::Result<(PathBuf, u64)> {
    let path = dir.join("momcheck-filler");
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let big = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    for chunk in [1usize << 20, 64 << 10, 4 << 10, 512] {
        loop {
            match f.write(&big[..chunk]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("writing the filler file"),
            }
        }
    }
    let _ = f.flush();
    if leave > 0 {
        let len = written.saturating_sub(leave);
        f.set_len(len).context("shrinking the filler file")?;
        written = len;
    }
    Ok((path, written))
}
