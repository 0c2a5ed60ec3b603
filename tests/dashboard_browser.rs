//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against a dashboard embedded with a real broker, a producer that keeps producing, a
//! consumer group falling behind and a running stream job. It checks that the topics, a lag
//! figure and live charts appear and change, runs a SQL query and reads the result table,
//! and saves a screenshot (`$CARGO_TARGET_TMPDIR/dashboard.png`; also `docs/dashboard.png`
//! with `MILLRACE_UPDATE_SCREENSHOT=1`).
//!
//! Skipped, loudly, when /usr/bin/chromedriver is missing (`scripts/test` installs Debian's
//! `chromium` and `chromium-driver` when it runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../dashboard/tests/common/http.rs"]
mod http;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use millrace_broker::{BrokerConfig, RunningBroker};
use millrace_client::admin::NewTopic;
use millrace_client::{
    Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use millrace_dashboard::{Dashboard, DashboardConfig};
use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "browser-token";
/// The longest any one condition in the page may take to appear.
const WAIT: Duration = Duration::from_secs(60);

#[derive(serde::Serialize, serde::Deserialize)]
struct View {
    page: String,
    ts: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn start_broker(dir: &Path) -> RunningBroker {
    let overrides = vec!["group.initial.rebalance.delay.ms=0".to_string()];
    let settings = millrace_broker::config::parse_overrides(&overrides).unwrap();
    let config = BrokerConfig::from_settings(
        &settings,
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.to_path_buf()),
    )
    .unwrap();
    millrace_broker::start(config).await.unwrap()
}

/// chromedriver as a child process, killed when dropped (also when the test fails).
struct Driver {
    child: Child,
    addr: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        // Ready when /status says so; connection refused until it listens.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Ok(mut stream)) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(&driver.addr),
            )
            .await
            {
                use tokio::io::AsyncWriteExt;
                let _ = stream.shutdown().await;
                let status = http::get(&driver.addr, "/status", &[]).await;
                if status.status == 200 && status.json()["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A WebDriver session: the few commands this test needs, as JSON over HTTP.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl<'a> Browser<'a> {
    async fn open(driver: &'a Driver, profile: &Path) -> Browser<'a> {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1050", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let response = http::post_json(&driver.addr, "/session", &[], &capabilities).await;
        assert_eq!(response.status, 200, "new session: {}", response.text());
        let session = response.json()["value"]["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        Browser { driver, session }
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let response = if method == "POST" {
            http::post_json(&self.driver.addr, &path, &[], &body).await
        } else {
            http::request(&self.driver.addr, method, &path, &[], None).await
        };
        assert_eq!(response.status, 200, "{method} {path}: {}", response.text());
        response.json()["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn js(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Evaluates `script` until it returns something other than null, and returns that.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.js(script).await;
            if !value.is_null() {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let error = self
                    .js("const e = document.querySelector('.error'); return e ? e.textContent : null;")
                    .await;
                panic!("timed out waiting for {what} (page error: {error})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `script` returns a non-null value different from `before`.
    async fn wait_for_change(&self, what: &str, script: &str, before: &Value) -> Value {
        let check = format!(
            "const v = (() => {{ {script} }})(); return v !== null && JSON.stringify(v) !== {} ? v : null;",
            serde_json::to_string(&before.to_string()).unwrap()
        );
        self.wait_for(what, &check).await
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", Value::Null).await;
        decode_base64(encoded.as_str().unwrap())
    }

    async fn close(self) {
        let path = format!("/session/{}", self.session);
        let _ = http::request(&self.driver.addr, "DELETE", &path, &[], None).await;
    }
}

/// Standard base64 (the screenshot encoding), without a dependency for one call.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_in_headless_chromium() {
    if !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "\n\n*** SKIP dashboard_browser: {CHROMEDRIVER} is missing (apt-get install chromium \
             chromium-driver; scripts/test does this as root) ***\n"
        );
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let broker = start_broker(data.path()).await;
    let bootstrap = broker.local_addr().to_string();
    let client = ClientConfig::new(&bootstrap);
    let admin = Admin::connect(client.clone()).await.unwrap();
    admin
        .create_topic(NewTopic::new("page-views", 3))
        .await
        .unwrap();

    // A producer that keeps going until the test ends: rates, lag and counts keep moving.
    let (stop_tx, stop_rx) = watch::channel(false);
    let producing = {
        let client = client.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let producer = Producer::connect(ProducerConfig::new(client))
                .await
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut i = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                for _ in 0..10 {
                    let view = View {
                        page: format!("/page/{}", i % 7),
                        ts: now_ms(),
                    };
                    let record =
                        ProducerRecord::new("page-views", serde_json::to_vec(&view).unwrap())
                            .key(format!("user-{}", i % 13));
                    // Delivery is awaited by flush below; a failed send ends the producer.
                    if producer.send(record).await.is_err() {
                        return;
                    }
                    i += 1;
                }
            }
            producer.close().await;
        })
    };
    // A group that committed early and stopped reading: its lag grows with every record.
    let committed = (0..3)
        .map(|p| (TopicPartition::new("page-views", p), 0))
        .collect();
    admin
        .alter_group_offsets("slow-readers", &committed)
        .await
        .unwrap();

    // A stream job: views per page in hour windows (open, so the state keeps rows).
    let job = Job::new(
        StreamsConfig::new("page-counter", client.clone())
            .commit_interval(Duration::from_millis(500)),
        Source::json(&["page-views"], |v: &View| v.ts),
        |views| {
            views
                .key_by(|_user, view| view.page.clone())
                .window(Windows::tumbling(Duration::from_secs(3600)).grace(Duration::from_secs(1)))
                .emit(EmitMode::Final)
                .named("page_views_per_hour")
                .count()
        },
        Sink::callback(|_| {}),
    );
    let (state, metrics) = (job.state(), job.metrics());
    let (job_stop, job_stopped) = oneshot::channel::<()>();
    let job_task = tokio::spawn(job.run(async move {
        let _ = job_stopped.await;
    }));

    let bound = Dashboard::new(DashboardConfig {
        bootstrap,
        http: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.to_string()),
        allow_admin: false,
        parquet_dirs: Vec::new(),
    })
    .with_job("page-counter", state, metrics)
    .bind()
    .await
    .unwrap();
    let base = bound.url();
    let (dash_stop, dash_stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async move {
        let _ = dash_stopped.await;
    }));

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::open(&driver, profile.path()).await;

    // Overview: the topic appears, and its message count moves.
    browser.goto(&format!("{base}?token={TOKEN}#/")).await;
    let messages = "const c = document.querySelector('#topics-table tr[data-topic=\"page-views\"] .messages'); return c ? c.textContent : null;";
    let first = browser
        .wait_for("the page-views topic on the overview", messages)
        .await;
    browser
        .wait_for_change("the message count to move", messages, &first)
        .await;
    let rate_points = "const c = document.getElementById('rate-chart'); return c && c.querySelector('.uplot') ? Number(c.dataset.points) : null;";
    let points = browser
        .wait_for("the produce-rate chart", rate_points)
        .await;
    browser
        .wait_for_change("the produce-rate chart to grow", rate_points, &points)
        .await;

    // The consumer group: a lag figure that grows, and a lag chart.
    browser.goto(&format!("{base}#/group/slow-readers")).await;
    let lag = "const e = document.getElementById('lag-value'); return e && e.textContent !== '–' ? e.textContent : null;";
    let first_lag = browser.wait_for("the group's lag figure", lag).await;
    browser
        .wait_for_change("the lag to grow", lag, &first_lag)
        .await;
    browser
        .wait_for(
            "the lag chart",
            "const c = document.querySelector('#group-lag-chart .uplot canvas'); return c ? true : null;",
        )
        .await;

    // Live aggregates: the job's table gets a bar chart whose bars change.
    browser.goto(&format!("{base}#/aggregates")).await;
    let bars = "const s = document.querySelector('.aggregate[data-table=\"page_views_per_hour\"] svg.bars'); return s ? s.dataset.signature : null;";
    let first_bars = browser.wait_for("the aggregate bar chart", bars).await;
    browser
        .wait_for_change("the bar chart to update", bars, &first_bars)
        .await;

    // SQL console: run a query, read the result table.
    browser.goto(&format!("{base}#/sql")).await;
    browser
        .wait_for(
            "the SQL console",
            "return document.getElementById('sql-input') ? true : null;",
        )
        .await;
    browser
        .js("const i = document.getElementById('sql-input'); \
             i.value = 'SELECT key AS page, sum(value) AS views FROM page_views_per_hour GROUP BY key ORDER BY key'; \
             document.getElementById('sql-run').click(); return true;")
        .await;
    let table = browser
        .wait_for(
            "the SQL result table",
            "const t = document.getElementById('sql-table'); if (!t) return null; \
             return { head: [...t.querySelectorAll('thead th')].map(c => c.textContent), \
                      rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent)) };",
        )
        .await;
    assert_eq!(table["head"], json!(["page", "views"]));
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7, "{table}");
    assert_eq!(rows[0][0], "/page/0");
    assert!(rows.iter().all(|r| r[1]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse::<u64>()
        .unwrap()
        > 0));

    // A malformed query shows a readable error, not a blank panel.
    browser
        .js(
            "document.getElementById('sql-input').value = 'SELEC oops'; \
             document.getElementById('sql-run').click(); return true;",
        )
        .await;
    let error = browser
        .wait_for(
            "the SQL error message",
            "const e = document.querySelector('#page-error .error'); return e ? e.textContent : null;",
        )
        .await;
    assert!(!error.as_str().unwrap().is_empty());

    // The screenshot: the aggregates page, with the charts filled in.
    browser.goto(&format!("{base}#/aggregates")).await;
    browser.wait_for("the aggregate bar chart", bars).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&artifact, &png).unwrap();
    eprintln!("screenshot: {}", artifact.display());
    if std::env::var("MILLRACE_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard.png"), &png).unwrap();
        eprintln!("updated docs/dashboard.png");
    }

    browser.close().await;
    drop(driver);
    let _ = dash_stop.send(());
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("the dashboard did not stop")
        .unwrap()
        .unwrap();
    let _ = job_stop.send(());
    job_task.await.unwrap().unwrap();
    stop_tx.send_replace(true);
    producing.await.unwrap();
    broker.shutdown().await;
}
