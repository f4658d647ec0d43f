//! A thread kept for the second of two syncs run side by side (the segment files beside
//! sled's log in a full flush, the heads file beside the segment files for an ack). Starting
//! a thread for each costs more than the fdatasync it waits for (about 150 µs on a small
//! VM against 130–200 µs), and an ack waits for it.

use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct Side {
    tx: mpsc::Sender<Job>,
}

impl Side {
    pub fn new() -> std::io::Result<Side> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("momd-sync".into())
            .spawn(move || {
                // Ends when the store (every sender) is gone.
                for job in rx {
                    job();
                }
            })?;
        Ok(Side { tx })
    }

    /// Run `f` on the side thread; its result comes back on the receiver (an error there if
    /// the thread is gone).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Pending<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // A send fails only with the thread gone: the receiver then says so.
        let _ = self.tx.send(job);
        Pending(rx)
    }
}

pub(super) struct Pending<T>(mpsc::Receiver<std::io::Result<T>>);

impl<T> Pending<T> {
    pub fn wait(self) -> std::io::Result<T> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread is gone")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_and_answer_in_turn() {
        let side = Side::new().unwrap();
        let a = side.run(|| Ok(1));
        let b = side.run(|| Err::<u8, _>(std::io::Error::other("no")));
        assert_eq!(a.wait().unwrap(), 1);
        assert!(b.wait().is_err());
    }
}
