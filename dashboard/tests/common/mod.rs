//! A dashboard served on a free port for the tests, polled until what a test waits for shows.
#![allow(clippy::unwrap_used, dead_code)]

use std::time::Duration;

use millrace_dashboard::{Dashboard, DashboardConfig};
use millrace_testkit::http::get;
use serde_json::Value;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

/// A dashboard serving until dropped-and-stopped.
pub struct Running {
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), millrace_dashboard::DashboardError>>,
}

impl Running {
    pub async fn start(dashboard: Dashboard) -> Running {
        let bound = dashboard.bind().await.unwrap();
        let addr = bound.local_addr().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            served,
        }
    }

    pub async fn json(&self, path: &str) -> Value {
        let response = get(&self.addr, path, &[]).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        response.json()
    }

    /// Polls `path` until `check` finds what it wants in the body.
    pub async fn eventually<T>(
        &self,
        what: &str,
        path: &str,
        check: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body = self.json(path).await;
            if let Some(found) = check(&body) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last {path}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.served)
            .await
            .expect("the dashboard did not shut down")
            .unwrap()
            .unwrap();
    }
}

pub fn dashboard(bootstrap: String) -> Dashboard {
    Dashboard::new(DashboardConfig {
        bootstrap,
        http: "127.0.0.1:0".parse().unwrap(),
        token: None,
        allow_admin: false,
        parquet_dirs: Vec::new(),
        ..DashboardConfig::default()
    })
}
