#![allow(dead_code)]

//! A PostgreSQL store for tests: one fresh schema per fixture in the local server's `test`
//! database (so tests run in parallel), dropped again when the fixture is dropped.

use handover::store::{SharedStore, StoreUrl};

/// The server the tests use; override with HANDOVER_TEST_POSTGRES.
pub fn server_url() -> String {
    std::env::var("HANDOVER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

pub struct PgSchema {
    pub schema: String,
    pub url: String,
    pub store: SharedStore,
}

impl PgSchema {
    pub async fn new() -> PgSchema {
        Self::named(format!("t_{}", uuid::Uuid::new_v4().simple())).await
    }

    /// A fresh schema with the given name (a lowercase SQL identifier).
    pub async fn named(schema: String) -> PgSchema {
        let server = server_url();
        let admin = sqlx::PgPool::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {server} is needed for these tests ({e}); start it with \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            )
        });
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options[search_path]={schema}");
        let store = handover::store::open_migrated(&url.parse::<StoreUrl>().unwrap())
            .await
            .unwrap();
        PgSchema { schema, url, store }
    }

    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        // Drop runs inside the test's runtime; use a thread with its own to clean up.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&server_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}
