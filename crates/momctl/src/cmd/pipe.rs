//! What the reader of our stdout has taken: when stdout is a pipe, the kernel knows how many
//! bytes are still in it (FIONREAD) and whether its reader is gone (POLLERR). `recv` acks a
//! message only once its reader took it out of the pipe, so a pipe cannot swallow a queue
//! and a worker that dies leaves what it never read to be delivered again.

use std::os::fd::AsRawFd;

/// A view of stdout when it is a pipe or FIFO.
pub struct Pipe {
    fd: i32,
}

impl Pipe {
    /// `Some` when stdout is a pipe (or FIFO); files and terminals are written and done.
    pub fn stdout() -> Option<Pipe> {
        let fd = std::io::stdout().as_raw_fd();
        // SAFETY: fstat fills the zeroed struct it is given; fd is stdout, open for the
        // process's life.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return None;
        }
        (st.st_mode & libc::S_IFMT == libc::S_IFIFO).then_some(Pipe { fd })
    }

    /// Bytes written to the pipe and not read yet.
    pub fn unread(&self) -> Option<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer it is given.
        let r = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut n) };
        (r == 0).then_some(n.max(0) as usize)
    }

    /// The reader closed its end: nothing written now will ever be read.
    pub fn reader_gone(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }
}
