//! The cluster view (`n`, `:cluster`): the nodes and Raft groups as the connected node sees
//! them. Its `cluster_status` is asked for only while the view is open, since answering may
//! cost the node a round trip to each group's leader (docs/protocol.md section 4.32).

use mom_proto::ClusterStatus;

use super::{App, Command, Drill};

/// The last answer to `cluster_status`, and what the network task was told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub status: Option<ClusterStatus>,
    /// Why the last request failed; `status`, if any, is then older.
    pub error: Option<String>,
    /// When `status` came (ms since the epoch, by this machine's clock).
    pub at: u64,
    /// The network task polls `cluster_status`.
    polling: bool,
}

impl App {
    pub fn cluster_open(&self) -> bool {
        matches!(self.drill, Some(Drill::Cluster))
    }

    /// `n`: open the view, or close it when it is open.
    pub(super) fn toggle_cluster(&mut self) {
        self.drill = if self.cluster_open() {
            None
        } else {
            Some(Drill::Cluster)
        };
    }

    pub(super) fn cluster_reply(&mut self, reply: Result<ClusterStatus, String>) {
        let v = &mut self.cluster;
        match reply {
            Ok(st) => {
                v.status = Some(st);
                v.error = None;
                v.at = self.now;
            }
            Err(e) => v.error = Some(e),
        }
    }

    /// Tell the network task to start or stop polling when the view opened or closed,
    /// whatever closed it (Esc, `n`, a pane key, a click, a command).
    pub(super) fn sync_cluster_polling(&mut self) -> Option<Command> {
        let open = self.cluster_open();
        (open != self.cluster.polling).then(|| {
            self.cluster.polling = open;
            Command::Cluster(open)
        })
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use mom_proto::ClusterStatus;

    use super::super::{Event, NetEvent};
    use super::*;

    fn press(a: &mut App, c: KeyCode) -> Vec<Command> {
        a.update(Event::Key(KeyEvent::new(c, KeyModifiers::NONE)))
    }

    #[test]
    fn the_cluster_is_polled_only_while_its_view_is_open() {
        let mut a = App::new("127.0.0.1:7878", 5, false);
        assert_eq!(
            press(&mut a, KeyCode::Char('n')),
            vec![Command::Cluster(true)]
        );
        assert!(a.cluster_open());
        assert!(
            press(&mut a, KeyCode::Char('j')).is_empty(),
            "no second start"
        );
        assert_eq!(press(&mut a, KeyCode::Esc), vec![Command::Cluster(false)]);
        // `n` toggles; a pane key or the command line leaves or opens it too.
        press(&mut a, KeyCode::Char('n'));
        assert_eq!(
            press(&mut a, KeyCode::Char('n')),
            vec![Command::Cluster(false)]
        );
        press(&mut a, KeyCode::Char('n'));
        assert_eq!(
            press(&mut a, KeyCode::Char('3')),
            vec![Command::Cluster(false)]
        );
        assert!(!a.cluster_open());
        for c in ":cluster".chars() {
            press(&mut a, KeyCode::Char(c));
        }
        assert_eq!(press(&mut a, KeyCode::Enter), vec![Command::Cluster(true)]);
        assert!(a.cluster_open());
    }

    #[test]
    fn a_failed_poll_keeps_the_last_status_and_says_why() {
        let mut a = App::new("127.0.0.1:7878", 5, false);
        a.update(Event::Tick(1_000));
        let st = ClusterStatus {
            mode: "single".into(),
            ..ClusterStatus::default()
        };
        a.update(Event::Net(NetEvent::Cluster(Ok(Box::new(st.clone())))));
        assert_eq!(a.cluster.at, 1_000);
        a.update(Event::Tick(2_000));
        a.update(Event::Net(NetEvent::Cluster(Err("timed out".into()))));
        assert_eq!(a.cluster.status.as_ref(), Some(&st));
        assert_eq!(a.cluster.error.as_deref(), Some("timed out"));
        assert_eq!(a.cluster.at, 1_000);
    }
}
