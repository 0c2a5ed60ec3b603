//! Login mode: people log in with a SASL user of the cluster, and each session talks to the
//! cluster with its own client, so the broker's ACLs decide what the console shows and does.
//!
//! `POST /api/login` opens an admin client with the user's credentials (the mechanism and the
//! rest of the connection come from the dashboard's client settings); the broker checks the
//! password, the dashboard never stores it beyond that session's client. A session is a
//! random id in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) that ends on logout,
//! after [`SESSION_IDLE`] without requests, or when the server stops. Each session samples
//! the cluster with its own [`ClusterCache`], so a topic its principal may not DESCRIBE never
//! reaches its pages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use millrace_client::{Admin, ClientConfig, ClientError};
use ring::rand::SecureRandom;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::sampler::{now_ms, ClusterCache, CLUSTER_WAIT};
use crate::AppState;

/// The session cookie's name.
pub(crate) const COOKIE_NAME: &str = "millrace_session";
/// A session unused this long ends (its sampler stops, its client closes).
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// How often idle sessions are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(30);
/// Sessions at once; each samples the cluster with its own client, so their number is
/// bounded. Further logins answer 503 until sessions end.
const MAX_SESSIONS: usize = 64;
/// User names and passwords longer than this are refused before reaching the broker.
const MAX_CREDENTIAL_LEN: usize = 1024;

/// When a session was last used: bumped by every request and every live update sent to it.
#[derive(Debug)]
pub(crate) struct Activity(AtomicI64);

impl Activity {
    fn new() -> Self {
        Activity(AtomicI64::new(now_ms()))
    }

    /// Marks the session as used now.
    pub(crate) fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    fn idle_for_ms(&self) -> i64 {
        now_ms() - self.0.load(Ordering::Relaxed)
    }
}

/// One logged-in user.
pub(crate) struct Session {
    /// The principal's user name, as logged in.
    pub(crate) user: String,
    /// The state this session's requests see: the shared one with its own cluster view.
    pub(crate) state: Arc<AppState>,
    activity: Arc<Activity>,
    /// Stops the session's sampler and ends its live update streams.
    stop: watch::Sender<bool>,
    sampler: JoinHandle<()>,
}

impl Session {
    /// Stops the sampler and waits for it.
    async fn end(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.sampler.await {
            tracing::warn!(%error, "a session's sampler ended abnormally");
        }
    }
}

/// The sessions of a dashboard, by id.
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    /// Cookies get `Secure` when the dashboard serves HTTPS.
    secure_cookie: bool,
}

impl Sessions {
    pub(crate) fn new(secure_cookie: bool) -> Self {
        Sessions {
            by_id: Mutex::new(HashMap::new()),
            secure_cookie,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // Every update replaces whole entries, so a poisoned map is still consistent.
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of the session the request's cookie names, marking it used.
    pub(crate) fn find(&self, headers: &HeaderMap) -> Option<Arc<AppState>> {
        let id = cookie(headers, COOKIE_NAME)?;
        let map = self.map();
        let session = map.get(&id)?;
        if session.activity.idle_for_ms() > SESSION_IDLE.as_millis() as i64 {
            return None;
        }
        session.activity.touch();
        Some(session.state.clone())
    }

    /// The `Set-Cookie` value that gives a browser session `id`.
    pub(crate) fn cookie_for(&self, id: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }

    /// The `Set-Cookie` value that makes a browser forget its session.
    pub(crate) fn clearing_cookie(&self) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }

    /// Ends the session the request's cookie names, if any; returns its user.
    pub(crate) async fn logout(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE_NAME)?;
        let session = self.map().remove(&id)?;
        let user = session.user.clone();
        session.end().await;
        Some(user)
    }

    /// Ends every session (the server is stopping).
    pub(crate) async fn end_all(&self) {
        let sessions: Vec<Session> = self.map().drain().map(|(_, s)| s).collect();
        for session in sessions {
            session.end().await;
        }
    }

    /// Ends idle sessions every [`REAP_INTERVAL`] until `stop`.
    pub(crate) async fn expire_idle(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(REAP_INTERVAL);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let idle: Vec<Session> = {
                let mut map = self.map();
                let ids: Vec<String> = map
                    .iter()
                    .filter(|(_, s)| s.activity.idle_for_ms() > SESSION_IDLE.as_millis() as i64)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| map.remove(id)).collect()
            };
            for session in idle {
                tracing::info!(user = %session.user, "dashboard session expired");
                session.end().await;
            }
        }
    }

    /// Checks `user`'s password with the cluster and starts a session: its id, for the cookie.
    pub(crate) async fn login(
        &self,
        shared: &Arc<AppState>,
        user: &str,
        password: &str,
    ) -> Result<String, ApiError> {
        if user.is_empty() || password.is_empty() {
            return Err(ApiError::bad_request(
                "give a user name and a password of a SASL user of the cluster",
            ));
        }
        if user.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
            return Err(ApiError::bad_request(
                "the user name or password is too long",
            ));
        }
        if self.map().len() >= MAX_SESSIONS {
            return Err(ApiError::unavailable(format!(
                "{MAX_SESSIONS} sessions are open: log out elsewhere or wait for idle ones to end"
            )));
        }
        let mut client: ClientConfig = shared.login_template.clone();
        client.security.sasl_username = Some(user.to_string());
        client.security.sasl_password = Some(password.to_string());
        // Connecting authenticates: the first connection does the SASL exchange.
        let admin = tokio::time::timeout(CLUSTER_WAIT, Admin::connect(client.clone()))
            .await
            .map_err(|_| ApiError::timeout("logging in to the cluster"))?
            .map_err(|error| match error {
                ClientError::Authentication { reason, .. } => {
                    tracing::warn!(%user, "dashboard login refused by the cluster");
                    ApiError::new(
                        axum::http::StatusCode::UNAUTHORIZED,
                        format!("login failed: the cluster refused user {user:?}: {reason}"),
                    )
                }
                other => ApiError::unavailable(format!("cannot reach the cluster: {other}")),
            })?;
        let id = random_id()?;
        let (stop, stop_rx) = watch::channel(false);
        // The shared stop (server shutdown) also ends this session's streams and sampler.
        let mut shared_stop = shared.stop.clone();
        let forward = stop.clone();
        let mut own_stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shared_stop.wait_for(|s| *s) => { forward.send_replace(true); }
                _ = own_stop.wait_for(|s| *s) => {}
            }
        });
        let cluster = Arc::new(ClusterCache::connected(client, admin));
        let sampler = tokio::spawn(cluster.clone().run(stop_rx.clone()));
        let activity = Arc::new(Activity::new());
        let state = Arc::new(shared.for_session(user, cluster, stop_rx, activity.clone()));
        self.map().insert(
            id.clone(),
            Session {
                user: user.to_string(),
                state,
                activity,
                stop,
                sampler,
            },
        );
        tracing::info!(%user, "dashboard login");
        Ok(id)
    }
}

/// 32 random bytes, hex: the session id. A failing system random source refuses the login
/// rather than hand out guessable ids.
fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::unavailable("no random numbers for a session id"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_and_distinct() {
        let a = random_id().ok();
        let b = random_id().ok();
        assert_eq!(a.as_ref().map(String::len), Some(64));
        assert_ne!(a, b);
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            axum::http::HeaderValue::from_static("a=1; millrace_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE_NAME).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn cookies_are_secure_over_https_only() {
        assert!(Sessions::new(true).cookie_for("x").ends_with("; Secure"));
        let plain = Sessions::new(false).cookie_for("x");
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
    }
}
