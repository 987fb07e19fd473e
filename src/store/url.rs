//! Parsing of store URLs (`sqlite://PATH`, `postgres://...`) into a typed value, with errors a user can act on.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// An embedded SQLite file, created on first use.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL database (the URL is kept whole for the driver).
    Postgres {
        /// The whole URL, password included.
        url: String,
    },
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{text:?} is not a store URL; use sqlite://PATH or postgres://USER@HOST/DB"
            ));
        };
        match scheme {
            "sqlite" => {
                let path = rest.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err("sqlite:// needs a file path, e.g. sqlite://handover.db".into());
                }
                if path == ":memory:" {
                    return Err(
                        "sqlite://:memory: cannot be shared between processes; use a file path"
                            .into(),
                    );
                }
                Ok(StoreUrl::Sqlite {
                    path: PathBuf::from(path),
                })
            }
            "postgres" | "postgresql" => {
                if rest.is_empty() {
                    return Err(
                        "postgres:// needs a host, e.g. postgres://127.0.0.1/handover".into(),
                    );
                }
                Ok(StoreUrl::Postgres {
                    url: text.to_string(),
                })
            }
            other => Err(format!(
                "unsupported store scheme {other:?}; use sqlite://PATH or postgres://USER@HOST/DB"
            )),
        }
    }
}

impl fmt::Display for StoreUrl {
    /// Shows the URL without any password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres { url } => f.write_str(&redact_password(url)),
        }
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_paths() {
        assert_eq!(
            "sqlite://handover.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite {
                path: "handover.db".into()
            }
        );
        assert_eq!(
            "sqlite:///var/lib/h.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite {
                path: "/var/lib/h.db".into()
            }
        );
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (bad, needle) in [
            ("handover.db", "not a store URL"),
            ("mysql://x/y", "unsupported store scheme"),
            ("sqlite://", "needs a file path"),
            ("sqlite://:memory:", "cannot be shared"),
            ("postgres://", "needs a host"),
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn display_hides_passwords() {
        let url: StoreUrl = "postgres://app:s3cret@db:5432/jobs".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/jobs");
    }
}
