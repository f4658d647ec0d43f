//! openraft's storage conformance suite against our log store (segment files) and state machine.

use mom_raft::log_store::{LogDb, LogStore};
use mom_raft::state_machine::StateMachine;
use mom_raft::{App, Cmd, LogId, Reply, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

/// A counter of applied commands.
#[derive(Default)]
struct Count(u64);

impl App for Count {
    fn apply(&mut self, _log_id: &LogId, _cmd: &Cmd) -> Reply {
        self.0 += 1;
        Reply(self.0.to_be_bytes().to_vec().into())
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = bytes.try_into().map_err(|_| "bad counter".to_string())?;
        self.0 = u64::from_be_bytes(b);
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<Count>, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine<Count>), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = LogDb::open(dir.path()).expect("open");
        // A group other than 0, so keys of neighbouring groups would show up if mixed.
        let sm = StateMachine::open(&db, 7, Count::default()).expect("sm");
        Ok((dir, db.group(7).expect("group"), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite: {e}");
    }
}
