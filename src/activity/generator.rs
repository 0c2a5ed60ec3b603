//! A simulated site: users in sessions viewing pages of a few topic clusters (a few popular
//! pages, a long tail), clicking, logging in, liking and sharing items, seeing and clicking
//! ads, and services logging requests. Seeded: the same seed and start time give the same
//! events in the same order, whatever the machine's speed (event time follows the event
//! count, not the wall clock).
//!
//! Incidents repeat every [`CYCLE_MINUTES`] minutes of event time, at fixed minutes of the
//! cycle, so that the stream jobs have something to catch:
//! - minute 6: credential stuffing, [`STUFFING_FAILURES`] failed logins for each of
//!   [`VICTIMS`] from many addresses;
//! - minutes 5 to 7: [`SLOW_PAGE`] loads ten times slower;
//! - minute 6: a bot ([`BOT_USER`]) clicks one ad of [`BOT_CAMPAIGN`] far above normal;
//! - minute 7: [`FAILING_SERVICE`] logs errors for about half its requests.
//!
//! A control user ([`CONTROL_USER`]) fails exactly one login every minute: no alert may fire
//! for it. Each victim fails one login at the start of each cycle, so its series exists and
//! its baseline is near zero before the burst.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use millrace_client::producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::events::{AdEventRecord, AppLog, Click, Item, Login, PageView, Social};
use super::topics;

/// Length of the incident cycle, in minutes of event time.
pub const CYCLE_MINUTES: i64 = 20;
/// Users whose accounts are attacked in minute 6 of each cycle.
pub const VICTIMS: [&str; 2] = ["u0007", "u0042"];
/// Failed logins per victim in the attacked minute.
pub const STUFFING_FAILURES: u32 = 40;
/// A user who fails exactly one login every minute (no alert may fire for it).
pub const CONTROL_USER: &str = "u-control";
/// The page that becomes slow in minutes 5 to 7 of each cycle.
pub const SLOW_PAGE: &str = "/checkout";
/// The clicking bot.
pub const BOT_USER: &str = "bot-7f3a";
/// The campaign whose ad the bot clicks.
pub const BOT_CAMPAIGN: &str = "c07";
/// Bot clicks in its minute.
pub const BOT_CLICKS: u32 = 150;
/// The service that fails in minute 7 of each cycle.
pub const FAILING_SERVICE: &str = "payments";
/// Services that log.
pub const SERVICES: [&str; 5] = ["web", "api", "auth", "payments", "search"];
/// Most event-time disorder the generator introduces (ms): the jobs' out-of-orderness and
/// grace must cover it, and do.
pub const MAX_DISORDER_MS: i64 = 3_000;

const USERS: usize = 2_000;
const ITEMS: usize = 400;
const CAMPAIGNS: usize = 20;
const ACTIVE_SESSIONS: usize = 300;
const CLUSTERS: [(&str, [&str; 8]); 6] = [
    (
        "hiking",
        [
            "tents", "boots", "stoves", "maps", "packs", "poles", "filters", "lamps",
        ],
    ),
    (
        "jobs",
        [
            "search",
            "saved",
            "alerts",
            "salary",
            "apply",
            "remote",
            "interview",
            "resume",
        ],
    ),
    (
        "news",
        [
            "world", "tech", "science", "sports", "markets", "health", "culture", "weather",
        ],
    ),
    (
        "learning",
        [
            "rust", "sql", "kafka", "python", "design", "stats", "ml", "cloud",
        ],
    ),
    (
        "groups",
        [
            "alumni", "devops", "data", "founders", "hiring", "design", "ops", "security",
        ],
    ),
    (
        "shop",
        [
            "cart", "deals", "returns", "gifts", "orders", "wishlist", "reviews", "help",
        ],
    ),
];
const ELEMENTS: [&str; 6] = ["nav", "button", "link", "image", "share", "follow"];
const ACTIONS: [&str; 3] = ["like", "share", "comment"];

/// How to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Random seed.
    pub seed: u64,
    /// Events per second of wall time (0: as fast as the broker takes them).
    pub rate: f64,
    /// Event time runs this many times faster than the wall clock.
    pub speedup: f64,
    /// Stop after this many events (all topics together).
    pub events: Option<u64>,
    /// Event time of the first event, ms since the epoch.
    pub start_ms: i64,
}

/// Counters the demo prints and the dashboard shows.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    /// Events produced and acknowledged.
    pub acknowledged: AtomicU64,
    /// Events handed to the producer.
    pub produced: AtomicU64,
    /// Event time of the latest event, ms since the epoch.
    pub event_time_ms: AtomicU64,
    /// Set once generation has ended and every event is acknowledged.
    pub finished: AtomicBool,
}

/// One visit of a user: views stay mostly within one cluster of pages.
struct Session {
    user: usize,
    id: String,
    cluster: usize,
    page: String,
    remaining: u32,
}

/// The simulated world and its random source.
struct World {
    rng: StdRng,
    users: Vec<String>,
    user_weights: WeightedIndex<f64>,
    pages: Vec<Vec<String>>,
    page_weights: WeightedIndex<f64>,
    items: Vec<Item>,
    item_weights: WeightedIndex<f64>,
    sessions: Vec<Session>,
    next_session: u64,
    next_event: u64,
}

/// Zipf-like weights `1 / (rank + 1)^s`: a few popular entries, a long tail.
fn zipf(n: usize, s: f64) -> Result<WeightedIndex<f64>, anyhow::Error> {
    WeightedIndex::new((0..n).map(|rank| 1.0 / ((rank + 1) as f64).powf(s)))
        .context("building a Zipf distribution")
}

impl World {
    fn new(seed: u64) -> anyhow::Result<World> {
        let mut rng = StdRng::seed_from_u64(seed);
        let users: Vec<String> = (1..=USERS).map(|i| format!("u{i:04}")).collect();
        let pages: Vec<Vec<String>> = CLUSTERS
            .iter()
            .map(|(cluster, names)| names.iter().map(|n| format!("/{cluster}/{n}")).collect())
            .collect();
        let items = (1..=ITEMS)
            .map(|i| Item {
                item_id: format!("item-{i:04}"),
                owner_id: users[rng.random_range(0..users.len())].clone(),
                title: format!("Post number {i}"),
            })
            .collect();
        Ok(World {
            rng,
            user_weights: zipf(USERS, 0.6)?,
            users,
            page_weights: zipf(8, 1.1)?,
            pages,
            item_weights: zipf(ITEMS, 0.9)?,
            items,
            sessions: Vec::new(),
            next_session: 0,
            next_event: 0,
        })
    }

    fn event_id(&mut self, prefix: &str) -> String {
        self.next_event += 1;
        format!("{prefix}-{}", self.next_event)
    }

    fn new_session(&mut self) -> Session {
        self.next_session += 1;
        let user = self.user_weights.sample(&mut self.rng);
        let cluster = self.rng.random_range(0..CLUSTERS.len());
        let page = if self.rng.random_bool(0.3) {
            "/home".to_string()
        } else {
            self.pages[cluster][self.page_weights.sample(&mut self.rng)].clone()
        };
        Session {
            user,
            id: format!("s{}", self.next_session),
            cluster,
            page,
            remaining: self.rng.random_range(2..12),
        }
    }

    /// A session to act in (new sessions replace finished ones).
    fn session(&mut self) -> usize {
        while self.sessions.len() < ACTIVE_SESSIONS {
            let session = self.new_session();
            self.sessions.push(session);
        }
        let i = self.rng.random_range(0..self.sessions.len());
        if self.sessions[i].remaining == 0 {
            self.sessions[i] = self.new_session();
        }
        i
    }

    fn page_view(&mut self, ts: i64, slow: bool) -> PageView {
        let i = self.session();
        let next = if self.rng.random_bool(0.04) {
            SLOW_PAGE.to_string()
        } else if self.rng.random_bool(0.8) {
            let cluster = self.sessions[i].cluster;
            self.pages[cluster][self.page_weights.sample(&mut self.rng)].clone()
        } else {
            let cluster = self.rng.random_range(0..CLUSTERS.len());
            self.pages[cluster][self.page_weights.sample(&mut self.rng)].clone()
        };
        let base: f64 = self.rng.random_range(80.0..400.0);
        let load_ms = if slow && next == SLOW_PAGE {
            base * 10.0
        } else {
            base
        } as u32;
        let event_id = self.event_id("pv");
        let session = &mut self.sessions[i];
        session.remaining = session.remaining.saturating_sub(1);
        let referrer = std::mem::replace(&mut session.page, next.clone());
        PageView {
            event_id,
            ts,
            user_id: self.users[session.user].clone(),
            session_id: session.id.clone(),
            page: next,
            referrer,
            load_ms,
        }
    }

    fn click(&mut self, ts: i64) -> Click {
        let i = self.session();
        let element = ELEMENTS[self.rng.random_range(0..ELEMENTS.len())].to_string();
        let event_id = self.event_id("cl");
        let session = &self.sessions[i];
        Click {
            event_id,
            ts,
            user_id: self.users[session.user].clone(),
            session_id: session.id.clone(),
            page: session.page.clone(),
            element,
        }
    }

    fn random_user(&mut self) -> String {
        self.users[self.user_weights.sample(&mut self.rng)].clone()
    }

    fn ip(&mut self) -> String {
        format!(
            "10.{}.{}.{}",
            self.rng.random_range(0..255),
            self.rng.random_range(0..255),
            self.rng.random_range(1..255)
        )
    }

    fn login(&mut self, ts: i64, user_id: String, success: bool) -> Login {
        Login {
            event_id: self.event_id("lg"),
            ts,
            user_id,
            ip: self.ip(),
            success,
        }
    }

    fn social(&mut self, ts: i64) -> Social {
        let item = self.items[self.item_weights.sample(&mut self.rng)]
            .item_id
            .clone();
        Social {
            event_id: self.event_id("so"),
            ts,
            user_id: self.random_user(),
            action: ACTIONS[self.rng.random_range(0..ACTIONS.len())].to_string(),
            item_id: item,
        }
    }

    fn ad_event(&mut self, ts: i64) -> AdEventRecord {
        let campaign = self.rng.random_range(1..=CAMPAIGNS);
        let click = self.rng.random_bool(0.06);
        AdEventRecord {
            event_id: self.event_id("ad"),
            ts,
            user_id: self.random_user(),
            campaign_id: format!("c{campaign:02}"),
            ad_id: format!("c{campaign:02}-a{}", self.rng.random_range(1..=3)),
            kind: if click { "click" } else { "impression" }.to_string(),
        }
    }

    fn app_log(&mut self, ts: i64, failing: bool) -> AppLog {
        let service = SERVICES[self.rng.random_range(0..SERVICES.len())];
        let error_rate = if failing && service == FAILING_SERVICE {
            0.5
        } else {
            0.01
        };
        let error = self.rng.random_bool(error_rate);
        let warn = !error && self.rng.random_bool(0.05);
        let latency_ms = if error {
            self.rng.random_range(500..3000)
        } else {
            self.rng.random_range(5..120)
        };
        AppLog {
            ts,
            service: service.to_string(),
            level: if error {
                "error"
            } else if warn {
                "warn"
            } else {
                "info"
            }
            .to_string(),
            message: if error {
                "request failed: upstream timeout".to_string()
            } else {
                "request served".to_string()
            },
            latency_ms,
        }
    }
}

/// Injections of one minute of event time, spread evenly across it.
#[derive(Default)]
struct MinuteInjections {
    minute: i64,
    stuffing: u32,
    bot: u32,
}

/// Produces the activity events.
pub struct Generator {
    config: GeneratorConfig,
    producer: Producer,
    world: World,
    stats: Arc<GeneratorStats>,
    pending: VecDeque<DeliveryFuture>,
    /// Ad clicks to send again a few events later (tracker retries).
    duplicates: VecDeque<(u64, ProducerRecord)>,
    injections: MinuteInjections,
    produced: u64,
}

impl Generator {
    /// A generator producing through a new producer on `client`.
    pub async fn connect(
        client: millrace_client::ClientConfig,
        config: GeneratorConfig,
    ) -> anyhow::Result<Generator> {
        let producer_config = ProducerConfig::builder(client)
            .linger_ms(5)
            .build()
            .context("producer settings")?;
        let producer = Producer::connect(producer_config)
            .await
            .context("connecting the generator's producer")?;
        Ok(Generator {
            world: World::new(config.seed)?,
            config,
            producer,
            stats: Arc::new(GeneratorStats::default()),
            pending: VecDeque::new(),
            duplicates: VecDeque::new(),
            injections: MinuteInjections {
                minute: -1,
                ..Default::default()
            },
            produced: 0,
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<GeneratorStats> {
        self.stats.clone()
    }

    /// The items table (written first, so that notifications find every item's owner).
    pub fn items(&self) -> &[Item] {
        &self.world.items
    }

    async fn send<T: Serialize>(
        &mut self,
        topic: &str,
        key: &str,
        value: &T,
    ) -> anyhow::Result<()> {
        let value = serde_json::to_vec(value).context("encoding an event")?;
        let record =
            ProducerRecord::new(topic, Bytes::from(value)).key(Bytes::from(key.to_string()));
        self.send_record(record).await
    }

    async fn send_record(&mut self, record: ProducerRecord) -> anyhow::Result<()> {
        let delivery = self
            .producer
            .send(record)
            .await
            .context("producing an event")?;
        self.pending.push_back(delivery);
        self.produced += 1;
        self.stats.produced.store(self.produced, Ordering::Relaxed);
        // Count what is acknowledged already (without waiting), so the demo's progress
        // reports follow the acknowledgements rather than trail them by the bound below.
        while let Some(oldest) = self.pending.front_mut() {
            match futures_util::FutureExt::now_or_never(oldest) {
                Some(delivered) => {
                    delivered.context("an event was not acknowledged")?;
                    self.pending.pop_front();
                    self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        // Bound the deliveries held: confirm the oldest ones as we go.
        while self.pending.len() > 20_000 {
            if let Some(oldest) = self.pending.pop_front() {
                oldest.await.context("an event was not acknowledged")?;
                self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.config.events.is_some_and(|n| self.produced >= n)
    }

    /// Writes the items table and waits until every item is acknowledged. Call it before the
    /// jobs start: a notification needs its item's owner in the table when the social action
    /// is joined.
    pub async fn write_items(&mut self) -> anyhow::Result<()> {
        let items: Vec<Item> = self.world.items.clone();
        for item in &items {
            self.send(topics::ITEMS, &item.item_id, item).await?;
        }
        self.producer.flush().await;
        while let Some(delivery) = self.pending.pop_front() {
            delivery.await.context("an item was not acknowledged")?;
        }
        // `--events N` counts activity events, not the table.
        self.produced = 0;
        self.stats.produced.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Produces events until `stop` is set or the event count is reached; returns the number
    /// of events produced (all acknowledged).
    pub async fn run(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
        let step_ms = if self.config.rate > 0.0 {
            1000.0 * self.config.speedup / self.config.rate
        } else {
            // As fast as possible: event time still advances as if at 1,000 events/s.
            self.config.speedup
        };
        let started = tokio::time::Instant::now();
        let mut step: u64 = 0;
        while !self.done() && !stop.load(Ordering::Relaxed) {
            let now_ms = self.config.start_ms + (step as f64 * step_ms) as i64;
            self.emit_at(now_ms, step).await?;
            step += 1;
            self.stats
                .event_time_ms
                .store(now_ms.max(0) as u64, Ordering::Relaxed);
            if self.config.rate > 0.0 && step.is_multiple_of(64) {
                let due =
                    started + Duration::from_secs_f64(self.produced as f64 / self.config.rate);
                tokio::time::sleep_until(due).await;
            }
        }
        // Tracker retries still queued are part of the traffic.
        while let Some((_, record)) = self.duplicates.pop_front() {
            self.send_record(record).await?;
        }
        self.producer.flush().await;
        while let Some(delivery) = self.pending.pop_front() {
            delivery.await.context("an event was not acknowledged")?;
            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.finished.store(true, Ordering::Relaxed);
        self.producer.close().await;
        Ok(self.produced)
    }

    /// Emits the events of one step of event time: scheduled ones first, then one random
    /// event.
    async fn emit_at(&mut self, now_ms: i64, step: u64) -> anyhow::Result<()> {
        let elapsed = now_ms - self.config.start_ms;
        let minute = elapsed.div_euclid(60_000);
        let phase = minute.rem_euclid(CYCLE_MINUTES);
        let fraction = elapsed.rem_euclid(60_000) as f64 / 60_000.0;
        if minute != self.injections.minute {
            self.injections = MinuteInjections {
                minute,
                ..Default::default()
            };
            // The control user: one failure and one success every minute.
            let failed = self.world.login(now_ms, CONTROL_USER.to_string(), false);
            self.send(topics::LOGINS, CONTROL_USER, &failed).await?;
            let ok = self.world.login(now_ms, CONTROL_USER.to_string(), true);
            self.send(topics::LOGINS, CONTROL_USER, &ok).await?;
            if phase == 0 {
                for victim in VICTIMS {
                    let failed = self.world.login(now_ms, victim.to_string(), false);
                    self.send(topics::LOGINS, victim, &failed).await?;
                }
            }
        }
        if phase == 6 {
            let due = (f64::from(STUFFING_FAILURES) * fraction) as u32;
            while self.injections.stuffing < due {
                self.injections.stuffing += 1;
                for victim in VICTIMS {
                    let failed = self.world.login(now_ms, victim.to_string(), false);
                    self.send(topics::LOGINS, victim, &failed).await?;
                }
            }
            let due = (f64::from(BOT_CLICKS) * fraction) as u32;
            while self.injections.bot < due {
                self.injections.bot += 1;
                let click = AdEventRecord {
                    event_id: self.world.event_id("ad"),
                    ts: now_ms,
                    user_id: BOT_USER.to_string(),
                    campaign_id: BOT_CAMPAIGN.to_string(),
                    ad_id: format!("{BOT_CAMPAIGN}-a1"),
                    kind: "click".to_string(),
                };
                self.send(topics::AD_EVENTS, BOT_CAMPAIGN, &click).await?;
            }
        }
        // A few percent of events arrive late, by at most MAX_DISORDER_MS.
        let ts = if self.world.rng.random_bool(0.03) {
            now_ms - self.world.rng.random_range(1..=MAX_DISORDER_MS)
        } else {
            now_ms
        };
        let pick: f64 = self.world.rng.random();
        if pick < 0.42 {
            let view = self.world.page_view(ts, (5..=7).contains(&phase));
            let key = view.user_id.clone();
            self.send(topics::PAGE_VIEWS, &key, &view).await?;
        } else if pick < 0.60 {
            let click = self.world.click(ts);
            let key = click.user_id.clone();
            self.send(topics::CLICKS, &key, &click).await?;
        } else if pick < 0.78 {
            let event = self.world.ad_event(ts);
            if event.kind == "click" && self.world.rng.random_bool(0.05) {
                let value = serde_json::to_vec(&event).context("encoding an event")?;
                let record = ProducerRecord::new(topics::AD_EVENTS, Bytes::from(value))
                    .key(Bytes::from(event.campaign_id.clone()));
                let later = step + self.world.rng.random_range(5..50);
                self.duplicates.push_back((later, record));
            }
            let key = event.campaign_id.clone();
            self.send(topics::AD_EVENTS, &key, &event).await?;
        } else if pick < 0.84 {
            let user = self.world.random_user();
            let success = !self.world.rng.random_bool(0.04);
            let login = self.world.login(ts, user.clone(), success);
            self.send(topics::LOGINS, &user, &login).await?;
        } else if pick < 0.90 {
            let social = self.world.social(ts);
            let key = social.user_id.clone();
            self.send(topics::SOCIAL, &key, &social).await?;
        } else {
            let log = self.world.app_log(ts, phase == 7);
            let key = log.service.clone();
            self.send(topics::APP_LOGS, &key, &log).await?;
        }
        while self.duplicates.front().is_some_and(|(at, _)| *at <= step) {
            if let Some((_, record)) = self.duplicates.pop_front() {
                self.send_record(record).await?;
            }
        }
        Ok(())
    }
}
