//! Browser sessions: logging in with the admin token gives an HttpOnly, SameSite=Strict cookie naming
//! a server-side session, which carries its own CSRF token (the synchronizer-token pattern).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "handover_session";
/// How long a session lasts after login.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest is dropped beyond this.
const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie).
    pub fn create(&self) -> String {
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                expires: now + LIFETIME,
            },
        );
        id
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    pub fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session id from a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_carry_their_own_csrf_token() {
        let sessions = Sessions::default();
        let a = sessions.create();
        let b = sessions.create();
        let (csrf_a, csrf_b) = (sessions.csrf(&a).unwrap(), sessions.csrf(&b).unwrap());
        assert_ne!(csrf_a, csrf_b);
        sessions.remove(&a);
        assert!(sessions.csrf(&a).is_none());
        assert!(sessions.csrf("forged").is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(
            from_cookie_header("theme=dark; handover_session=abc123; x=y"),
            Some("abc123")
        );
        assert_eq!(from_cookie_header("handover_session="), None);
        assert_eq!(from_cookie_header("other=1"), None);
        assert!(set_cookie("x").contains("HttpOnly; SameSite=Strict"));
    }
}
