//! The shared store suite on the embedded SQLite backend, each test on its own file.

mod common;
mod store_suite;

use handover::store::{SharedStore, StoreUrl};

struct SqliteFixture {
    store: SharedStore,
    _dir: tempfile::TempDir,
}

impl SqliteFixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Sqlite {
            path: dir.path().join("store.db"),
        };
        let store = handover::store::open_migrated(&url).await.unwrap();
        SqliteFixture { store, _dir: dir }
    }

    fn store(&self) -> SharedStore {
        self.store.clone()
    }
}

store_tests!(SqliteFixture::new());
retention_tests!(SqliteFixture::new());

impl SqliteFixture {
    fn aging(&self) -> store_suite::retention::Aging {
        store_suite::retention::Aging::Sqlite(self._dir.path().join("store.db"))
    }
}

#[tokio::test]
async fn migrating_twice_is_harmless_and_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Sqlite {
        path: dir.path().join("shared.db"),
    };
    // Two stores on one file migrate concurrently, as two worker processes starting together would.
    let (a, b) = tokio::join!(
        handover::store::open_migrated(&url),
        handover::store::open_migrated(&url)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.migrate().await.unwrap();
    let ids = a
        .submit(&[handover::store::NewJob::new("noop", serde_json::json!({}))])
        .await
        .unwrap();
    assert_eq!(b.get_job(ids[0]).await.unwrap().unwrap().kind, "noop");
}

#[tokio::test]
async fn an_unwritable_path_is_a_clear_error() {
    let url: StoreUrl = "sqlite:///proc/no-such-dir/x.db".parse().unwrap();
    let err = handover::store::open(&url).await.err().expect("must fail");
    let text = err.to_string();
    assert!(text.contains("cannot open SQLite store"), "{text}");
    assert!(!text.contains('\n'));
}
