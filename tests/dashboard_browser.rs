//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against `millrace demo`'s pipeline (broker, generator, stream jobs, Parquet export,
//! dashboard) and a consumer group falling behind. It checks that the topics, a lag
//! figure and live charts appear and change, runs a SQL query and reads the result table,
//! and saves a screenshot (`$CARGO_TARGET_TMPDIR/dashboard.png`; also `docs/dashboard.png`
//! with `MILLRACE_UPDATE_SCREENSHOT=1`).
//!
//! A second scenario logs in through the login form against a SASL_SSL broker with users and
//! ACLs, sees the topics that user may describe (and not the others), then logs in as the
//! admin and adds and edits an ACL on the ACLs page.
//!
//! Skipped, loudly, when /usr/bin/chromedriver is missing (`scripts/test` installs Debian's
//! `chromium` and `chromium-driver` when it runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use millrace::activity::demo::{Demo, DemoOptions};
use millrace_client::admin::{
    AclBinding, AclOperation, AclPatternType, AclPermissionType, AclResourceType, NewTopic,
};
use millrace_client::{Admin, ClientConfig, TopicPartition};
use millrace_dashboard::{Dashboard, DashboardConfig};
use millrace_testkit::{free_port, http};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The longest any one condition in the page may take to appear.
const WAIT: Duration = Duration::from_secs(60);

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
        let port = free_port();
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
    // A task lives on the heap: this test's future is too large for the test thread's stack
    // in debug builds.
    tokio::spawn(in_headless_chromium()).await.unwrap();
}

async fn in_headless_chromium() {
    if !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "\n\n*** SKIP dashboard_browser: {CHROMEDRIVER} is missing (apt-get install chromium \
             chromium-driver; scripts/test does this as root) ***\n"
        );
        return;
    }
    // The demo: broker, generator, the activity jobs, the Parquet export and the dashboard,
    // all on free ports. Event time runs 60x faster, so minute windows move every second.
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(DemoOptions {
        data_dir: Some(data.path().to_path_buf()),
        listen: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        rate: 1000.0,
        speedup: 60.0,
        commit_interval: Duration::from_millis(500),
        ..DemoOptions::default()
    })
    .await
    .unwrap();
    let base = demo.dashboard_url().to_string();
    // A group that committed early and stopped reading: its lag grows with every record.
    let admin = Admin::connect(ClientConfig::new(demo.bootstrap()))
        .await
        .unwrap();
    let partitions = DemoOptions::default().partitions;
    let committed = (0..partitions)
        .map(|p| (TopicPartition::new("page-views", p), 0))
        .collect();
    admin
        .alter_group_offsets("slow-readers", &committed)
        .await
        .unwrap();

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::open(&driver, profile.path()).await;

    // Overview: the topic appears, and its message count moves.
    browser.goto(&format!("{base}#/")).await;
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
    // Internal topics unchecked: neither the table nor the chart has the jobs' changelog and
    // repartition topics.
    let shown = "const c = document.getElementById('rate-chart'); if (!c || !c.querySelector('.uplot')) return null; \
         return { chart: [...c.querySelectorAll('.u-legend .u-series .u-label')].slice(1).map(l => l.textContent), \
                  table: [...document.querySelectorAll('#topics-table tr[data-topic]')].map(r => r.dataset.topic) };";
    let topics_shown = browser.wait_for("the overview's topics", shown).await;
    for name in topics_shown["chart"]
        .as_array()
        .unwrap()
        .iter()
        .chain(topics_shown["table"].as_array().unwrap())
    {
        let name = name.as_str().unwrap();
        assert!(
            !name.ends_with("-changelog") && !name.ends_with("-repartition"),
            "internal topic {name} shown: {topics_shown}"
        );
    }
    assert!(
        !topics_shown["chart"].as_array().unwrap().is_empty(),
        "{topics_shown}"
    );
    // The legend shows each series' latest value without hovering, and the time axis reads
    // as wall-clock times.
    let legend = browser
        .wait_for(
            "the legend's latest values",
            "const c = document.getElementById('rate-chart'); if (!c) return null; \
             const v = [...c.querySelectorAll('.u-legend .u-series .u-value')].slice(1).map(e => e.textContent); \
             return v.length && v.every(t => t !== '--' && t !== '–' && t !== '') ? v : null;",
        )
        .await;
    assert!(
        legend.as_array().unwrap().iter().all(|v| v
            .as_str()
            .unwrap()
            .replace(',', "")
            .parse::<f64>()
            .is_ok()),
        "{legend}"
    );
    let ticks = browser
        .wait_for(
            "the time axis labels",
            "const p = plots.get('rate-chart'); const v = p && p.plot.axes[0]._values; \
             return v && v.length ? v : null;",
        )
        .await;
    assert!(
        ticks.as_array().unwrap().iter().all(|t| {
            let t = t.as_str().unwrap();
            t.len() == 8 && t.as_bytes()[2] == b':' && t.as_bytes()[5] == b':'
        }),
        "time axis labels: {ticks}"
    );
    let overview = browser.screenshot().await;
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-overview.png");
    std::fs::write(&artifact, &overview).unwrap();
    // Checked, the internal topics are listed.
    browser
        .js("const b = document.getElementById('show-internal'); b.click(); return true;")
        .await;
    browser
        .wait_for(
            "a changelog topic once internal topics are shown",
            "return [...document.querySelectorAll('#topics-table tr[data-topic]')] \
               .some(r => r.dataset.topic.endsWith('-changelog')) ? true : null;",
        )
        .await;
    // The page's icon is served (no 404 in the console for /favicon.ico either).
    let icon = browser
        .js("const l = document.querySelector('link[rel=icon]'); return l ? new URL(l.href).pathname : null;")
        .await;
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    for path in [icon.as_str().unwrap(), "/favicon.ico"] {
        let response = http::get(host, path, &[]).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("image/svg+xml"),
            "{path}"
        );
    }

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
    // The brokers page: figures read from each broker's own metrics endpoint.
    browser.goto(&format!("{base}#/brokers")).await;
    browser
        .wait_for(
            "a broker's request rate from its metrics endpoint",
            "const r = document.querySelector('#broker-metrics-table tr[data-broker] .requests'); \
             return r && /[0-9]/.test(r.textContent) ? r.textContent : null;",
        )
        .await;
    browser
        .wait_for(
            "the link to the broker's /metrics",
            "const a = document.querySelector('#broker-metrics-table a[href$=\"/metrics\"]'); \
             return a ? a.href : null;",
        )
        .await;
    browser
        .wait_for(
            "the per-broker request chart",
            "const c = document.querySelector('#broker-requests-chart .uplot canvas'); return c ? true : null;",
        )
        .await;
    // The groups page: lag in time beside lag in records.
    browser.goto(&format!("{base}#/groups")).await;
    let behind = browser
        .wait_for(
            "the slow group's time behind",
            "const e = document.querySelector('#groups-table tr[data-group=\"slow-readers\"] .behind'); \
             return e && / (s|min|h)$/.test(e.textContent) ? e.textContent : null;",
        )
        .await;
    assert!(
        behind
            .as_str()
            .unwrap()
            .chars()
            .next()
            .unwrap()
            .is_ascii_digit(),
        "{behind}"
    );
    browser
        .wait_for(
            "the seconds-behind chart",
            "const c = document.querySelector('#groups-seconds-chart .uplot canvas'); return c ? true : null;",
        )
        .await;

    // Live aggregates: the job's table gets a bar chart whose bars change.
    browser.goto(&format!("{base}#/aggregates")).await;
    let bars = "const s = document.querySelector('.aggregate[data-table=\"page_views_per_minute\"] svg.bars'); return s ? s.dataset.signature : null;";
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
             i.value = 'SELECT key AS page, sum(views) AS views FROM page_views_per_minute GROUP BY key ORDER BY key'; \
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
    assert!(rows.len() >= 5, "{table}");
    assert!(
        rows.iter().all(|r| r[0].as_str().unwrap().starts_with('/')),
        "{table}"
    );
    assert!(rows.iter().all(|r| r[1]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse::<u64>()
        .unwrap()
        > 0));

    // The results table of the same job: the windows it closed and emitted.
    browser
        .js("const i = document.getElementById('sql-input'); \
             i.value = 'SELECT page, sum(views) AS views, count(*) AS windows FROM page_views_per_minute_results GROUP BY page ORDER BY page'; \
             document.getElementById('sql-table').remove(); \
             document.getElementById('sql-run').click(); return true;")
        .await;
    let results = browser
        .wait_for(
            "the results table's rows",
            // Until the first windows close the table is empty or not there yet: ask again.
            "const t = document.getElementById('sql-table'); \
             const rows = t ? [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent)) : []; \
             if (!rows.length) { \
               if (document.getElementById('sql-info').textContent !== 'running…') document.getElementById('sql-run').click(); \
               return null; } \
             return { head: [...t.querySelectorAll('thead th')].map(c => c.textContent), rows };",
        )
        .await;
    assert_eq!(results["head"], json!(["page", "views", "windows"]));
    assert!(
        results["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r[0].as_str().unwrap().starts_with('/')
                && r[1]
                    .as_str()
                    .unwrap()
                    .replace(',', "")
                    .parse::<u64>()
                    .unwrap()
                    > 0),
        "{results}"
    );

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

    // The screenshot: the aggregates page, with the charts filled in: the results charts
    // of page-load-stats (p50/p99) and error-rate (a series per service, alerts marked).
    browser.goto(&format!("{base}#/aggregates")).await;
    browser.wait_for("the aggregate bar chart", bars).await;
    for table in ["page_load_stats_results", "error_rate_results"] {
        let labels = browser
            .wait_for(
                &format!("the results chart of {table}"),
                &format!(
                    "const c = document.querySelector('.results-chart[data-table=\"{table}\"]'); \
                     if (!c || !c.querySelector('.uplot')) return null; \
                     return [...c.querySelectorAll('.u-legend .u-series .u-label')].slice(1).map(l => l.textContent);"
                ),
            )
            .await;
        let labels: Vec<&str> = labels
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        if table == "page_load_stats_results" {
            assert!(labels.iter().any(|l| l.starts_with("p50")), "{labels:?}");
            assert!(labels.iter().any(|l| l.starts_with("p99")), "{labels:?}");
        } else {
            assert_eq!(labels.last(), Some(&"alert"), "{labels:?}");
        }
    }
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
    tokio::time::timeout(Duration::from_secs(60), demo.shutdown())
        .await
        .expect("the demo did not stop")
        .unwrap();
}

/// PLAIN users of the login scenario's broker.
const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" user_alice="alice-secret";"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_through_the_form_shows_the_topics_the_user_may_see() {
    tokio::spawn(log_in_through_the_form()).await.unwrap();
}

async fn log_in_through_the_form() {
    if !Path::new(CHROMEDRIVER).exists() {
        eprintln!("\n\n*** SKIP dashboard_browser login: {CHROMEDRIVER} is missing ***\n");
        return;
    }
    // A broker with ACLs on and SASL PLAIN users over TLS (SASL_SSL, with a throw-away CA);
    // alice may DESCRIBE `greetings` only.
    let data = tempfile::tempdir().unwrap();
    let pki =
        millrace::activity::secure::DemoSecurity::create(&data.path().join("pki"), "127.0.0.1")
            .unwrap();
    let settings = millrace_broker::config::parse_overrides(&[
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0".to_string(),
        "ssl.keystore.type=PEM".to_string(),
        format!("ssl.keystore.location={}", pki.keystore.display()),
        "sasl.enabled.mechanisms=PLAIN".to_string(),
        format!("sasl.jaas.config={JAAS}"),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_string(),
        "super.users=User:admin".to_string(),
    ])
    .unwrap();
    let config =
        millrace_broker::BrokerConfig::from_settings(&settings, None, Some(data.path().into()))
            .unwrap();
    let broker = millrace_broker::start(config).await.unwrap();
    let sasl = broker.listener_addr("SASL_SSL").unwrap().to_string();
    let client_settings: Vec<(String, String)> = vec![
        ("security.protocol".into(), "SASL_SSL".into()),
        ("ssl.ca.location".into(), pki.ca.display().to_string()),
        ("sasl.mechanism".into(), "PLAIN".into()),
    ];
    let mut admin_config = ClientConfig::builder([sasl.clone()]);
    for (name, value) in client_settings.iter().chain(&[
        ("sasl.username".to_string(), "admin".to_string()),
        ("sasl.password".to_string(), "admin-secret".to_string()),
    ]) {
        admin_config = admin_config.set(name, value).unwrap();
    }
    let admin = Admin::connect(admin_config.build().unwrap()).await.unwrap();
    for topic in ["greetings", "payroll"] {
        admin
            .create_topic(NewTopic::new(topic, 1).replication_factor(1))
            .await
            .unwrap();
    }
    admin
        .create_acls(&[AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: "greetings".into(),
            pattern_type: AclPatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Describe,
            permission: AclPermissionType::Allow,
        }])
        .await
        .unwrap();

    let bound = Dashboard::new(DashboardConfig {
        bootstrap: sasl,
        http: "127.0.0.1:0".parse().unwrap(),
        login: true,
        allow_admin: true,
        client_settings,
        ..DashboardConfig::default()
    })
    .bind()
    .await
    .unwrap();
    let base = bound.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::open(&driver, profile.path()).await;
    browser.goto(&base).await;
    browser
        .wait_for(
            "the login form",
            "return document.getElementById('login-form') ? true : null;",
        )
        .await;
    // A wrong password: the form stays, with the cluster's refusal.
    browser
        .js("document.getElementById('login-user').value = 'alice'; \
             document.getElementById('login-password').value = 'wrong'; \
             document.getElementById('login-submit').click(); return true;")
        .await;
    let refused = browser
        .wait_for(
            "the refusal",
            "const e = document.querySelector('#login-error .error'); return e ? e.textContent : null;",
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("login failed"),
        "{refused}"
    );
    browser
        .js(
            "document.getElementById('login-password').value = 'alice-secret'; \
             document.getElementById('login-submit').click(); return true;",
        )
        .await;
    let shown = browser
        .wait_for(
            "alice's topics on the overview",
            "const rows = [...document.querySelectorAll('#topics-table tr[data-topic]')].map(r => r.dataset.topic); \
             return rows.length ? rows : null;",
        )
        .await;
    assert_eq!(shown, json!(["greetings"]), "alice may not see payroll");
    let user = browser
        .js("const u = document.getElementById('user'); return u && !u.hidden ? u.textContent : null;")
        .await;
    assert!(
        user.as_str().unwrap_or_default().contains("alice"),
        "{user}"
    );

    // Log out, log in as the admin, and grant and edit an ACL on the ACLs page.
    browser
        .js("document.getElementById('logout').click(); return true;")
        .await;
    browser
        .wait_for(
            "the login form after logging out",
            "return document.getElementById('login-form') ? true : null;",
        )
        .await;
    browser
        .js("document.getElementById('login-user').value = 'admin'; \
             document.getElementById('login-password').value = 'admin-secret'; \
             document.getElementById('login-submit').click(); return true;")
        .await;
    browser
        .wait_for(
            "the admin's overview",
            "return document.querySelector('#topics-table tr[data-topic=\"payroll\"]') ? true : null;",
        )
        .await;
    browser.goto(&format!("{base}#/acls")).await;
    let acl_rows = "const t = document.getElementById('acls-table'); if (!t) return null; \
         return [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].slice(0, 7).map(c => c.textContent).join(' '));";
    browser
        .wait_for(
            "the ACL form",
            "return document.getElementById('acl-form') && document.getElementById('acls-table') ? true : null;",
        )
        .await;
    browser
        .js("document.getElementById('acl-name').value = 'payroll'; \
             document.getElementById('acl-principal').value = 'User:alice'; \
             document.getElementById('acl-operation').value = 'READ'; \
             document.getElementById('acl-submit').click(); return true;")
        .await;
    let read_row = "User:alice * READ ALLOW TOPIC payroll LITERAL";
    browser
        .wait_for(
            "the new ACL in the table",
            &format!("const rows = (() => {{ {acl_rows} }})(); return rows && rows.includes('{read_row}') ? rows : null;"),
        )
        .await;
    // Edit: the form takes the row, the operation changes, Save adds the new and removes the old.
    browser
        .js(&format!(
            "const rows = [...document.querySelectorAll('#acls-table tbody tr')]; \
             const row = rows.find(r => [...r.cells].slice(0, 7).map(c => c.textContent).join(' ') === '{read_row}'); \
             row.querySelector('button[data-edit]').click(); return true;"
        ))
        .await;
    browser
        .js("document.getElementById('acl-operation').value = 'WRITE'; \
             document.getElementById('acl-submit').click(); return true;")
        .await;
    let edited = browser
        .wait_for(
            "the edited ACL",
            &format!("const rows = (() => {{ {acl_rows} }})(); \
                      return rows && rows.includes('User:alice * WRITE ALLOW TOPIC payroll LITERAL') ? rows : null;"),
        )
        .await;
    assert!(
        !edited.as_array().unwrap().iter().any(|r| r == read_row),
        "the old ACL is gone: {edited}"
    );

    browser.close().await;
    drop(driver);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("the dashboard did not stop")
        .unwrap()
        .unwrap();
    broker.shutdown().await;
}
