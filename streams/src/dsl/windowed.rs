//! Windowed streams: a stream grouped into tumbling, hopping, session or sliding windows,
//! waiting for its aggregation.

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::operator::Operator;
use crate::record::{Record, Windowed};
use crate::state::backend::StateBackend;
use crate::windows::sliding::SlidingAggregate;
use crate::windows::{
    EmitMode, SessionAggregate, SessionWindows, SlidingWindows, WindowAggregate, Windows,
};

use super::node::LateFn;
use super::stream::Stream;

impl<K: Send + 'static, V: Send + 'static> Stream<K, V> {
    /// Groups records by key into tumbling or hopping windows.
    pub fn window(self, windows: Windows) -> WindowedStream<K, V> {
        let config = WindowConfig::new(&self.backend);
        WindowedStream {
            stream: self,
            windows,
            config,
        }
    }

    /// Groups records by key into sliding windows (Kafka's `SlidingWindows`).
    pub fn sliding_window(self, windows: SlidingWindows) -> SlidingWindowedStream<K, V> {
        let config = WindowConfig::new(&self.backend);
        SlidingWindowedStream {
            stream: self,
            windows,
            config,
        }
    }

    /// Groups records by key into session windows.
    pub fn session_window(self, windows: SessionWindows) -> SessionWindowedStream<K, V> {
        let config = WindowConfig::new(&self.backend);
        SessionWindowedStream {
            stream: self,
            windows,
            config,
        }
    }
}

/// Options shared by windowed streams.
struct WindowConfig<K, V> {
    emit: EmitMode,
    name: Option<String>,
    on_late: Option<LateFn<K, V>>,
    backend: StateBackend,
}

impl<K: Send + 'static, V: Send + 'static> WindowConfig<K, V> {
    /// Adds to `stream` the step `make` builds from its name (given, or `<prefix>-<position>`),
    /// emit mode and backend, with this config's late-record callback.
    fn add<O>(
        self,
        stream: Stream<K, V>,
        prefix: &str,
        make: impl FnOnce(String, EmitMode, &StateBackend) -> O,
    ) -> Stream<O::OutKey, O::OutValue>
    where
        O: Operator<K, V> + 'static,
        O::OutKey: Send + 'static,
        O::OutValue: Send + 'static,
    {
        let stateful = stream.stateful;
        let name = self.name.unwrap_or_else(|| format!("{prefix}-{stateful}"));
        let op = make(name, self.emit, &self.backend);
        stream.operator(op, self.on_late)
    }
}

impl<K, V> WindowConfig<K, V> {
    fn new(backend: &StateBackend) -> Self {
        Self {
            emit: EmitMode::default(),
            name: None,
            on_late: None,
            backend: backend.clone(),
        }
    }
}

/// A stream grouped into tumbling or hopping windows, waiting for its aggregation.
pub struct WindowedStream<K, V> {
    stream: Stream<K, V>,
    windows: Windows,
    config: WindowConfig<K, V>,
}

/// A stream grouped into session windows, waiting for its aggregation.
pub struct SessionWindowedStream<K, V> {
    stream: Stream<K, V>,
    windows: SessionWindows,
    config: WindowConfig<K, V>,
}

/// A stream grouped into sliding windows, waiting for its aggregation.
pub struct SlidingWindowedStream<K, V> {
    stream: Stream<K, V>,
    windows: SlidingWindows,
    config: WindowConfig<K, V>,
}

macro_rules! window_options {
    () => {
        /// Chooses when results are emitted (default: [`EmitMode::Update`]).
        #[must_use]
        pub fn emit(mut self, mode: EmitMode) -> Self {
            self.config.emit = mode;
            self
        }

        /// Names the step and its state store; otherwise a name is derived from the step's
        /// position, which changes when steps are added before it (and orphans its changelog).
        #[must_use]
        pub fn named(mut self, name: impl Into<String>) -> Self {
            self.config.name = Some(name.into());
            self
        }

        /// Calls `f` with each late record (besides counting it and reporting it in
        /// [`Pipeline::take_late`]).
        #[must_use]
        pub fn on_late(mut self, f: impl FnMut(&Record<K, V>) + Send + 'static) -> Self {
            self.config.on_late = Some(Box::new(f));
            self
        }

        /// Keeps this step's state on disk (a [`crate::DiskStore`] file per task in `dir`)
        /// rather than in memory, for state larger than memory: each record reads and
        /// writes its state through the store, so memory holds the keys written since the
        /// last commit and a small time index. Slower per record. The changelog (same format
        /// as in memory) and restore work as for in-memory state; on-disk state is not
        /// published for live queries. See [`crate::state::backend`].
        #[must_use]
        pub fn on_disk(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
            self.config.backend = StateBackend::on_disk(dir);
            self
        }

        /// Keeps this step's state in memory, whatever the pipeline's backend.
        #[must_use]
        pub fn in_memory(mut self) -> Self {
            self.config.backend = StateBackend::InMemory;
            self
        }
    };
}

impl<K, V> WindowedStream<K, V>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    window_options!();

    /// Folds each window's records per key: `init` makes the empty accumulator, `add` folds
    /// one value in.
    pub fn aggregate<A>(
        self,
        init: impl Fn() -> A + Send + 'static,
        add: impl Fn(&mut A, &V) + Send + 'static,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let windows = self.windows;
        self.config
            .add(self.stream, "aggregate", |name, emit, backend| {
                WindowAggregate::with_backend(
                    name,
                    windows,
                    emit,
                    Box::new(init),
                    Box::new(add),
                    backend,
                )
            })
    }

    /// Counts records per key and window.
    pub fn count(self) -> Stream<Windowed<K>, u64> {
        self.aggregate(|| 0u64, |n: &mut u64, _: &V| *n += 1)
    }

    /// Combines each window's values per key with `f`.
    pub fn reduce(self, f: impl Fn(&V, &V) -> V + Send + 'static) -> Stream<Windowed<K>, V>
    where
        V: Clone + Serialize + DeserializeOwned,
    {
        self.aggregate(|| None, reducing(f))
            .flat_map(|k, v: Option<V>| v.map(|v| (k, v)))
    }
}

impl<K, V> SessionWindowedStream<K, V>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    window_options!();

    /// Folds each session's records per key; `merge` folds one session's accumulator into
    /// another's when a record bridges them.
    pub fn aggregate<A>(
        self,
        init: impl Fn() -> A + Send + 'static,
        add: impl Fn(&mut A, &V) + Send + 'static,
        merge: impl Fn(&mut A, A) + Send + 'static,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let windows = self.windows;
        self.config
            .add(self.stream, "session-aggregate", |name, emit, backend| {
                SessionAggregate::with_backend(
                    name,
                    windows,
                    emit,
                    Box::new(init),
                    Box::new(add),
                    Box::new(merge),
                    backend,
                )
            })
    }

    /// Counts records per key and session.
    pub fn count(self) -> Stream<Windowed<K>, u64> {
        self.aggregate(|| 0u64, |n: &mut u64, _: &V| *n += 1, |a, b| *a += b)
    }

    /// Combines each session's values per key with `f` (also used to merge sessions).
    pub fn reduce(self, f: impl Fn(&V, &V) -> V + Send + Sync + 'static) -> Stream<Windowed<K>, V>
    where
        V: Clone + Serialize + DeserializeOwned,
    {
        let f = std::sync::Arc::new(f);
        let g = std::sync::Arc::clone(&f);
        self.aggregate(
            || None,
            reducing(move |a: &V, b: &V| f(a, b)),
            move |acc: &mut Option<V>, other: Option<V>| {
                *acc = match (acc.take(), other) {
                    (Some(a), Some(b)) => Some(g(&a, &b)),
                    (a, b) => a.or(b),
                };
            },
        )
        .flat_map(|k, v: Option<V>| v.map(|v| (k, v)))
    }
}

impl<K, V> SlidingWindowedStream<K, V>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    window_options!();

    /// Folds each window's records per key. Values are kept until no open window needs them,
    /// which is why they must be serializable here (they go to the changelog).
    pub fn aggregate<A>(
        self,
        init: impl Fn() -> A + Send + 'static,
        add: impl Fn(&mut A, &V) + Send + 'static,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let windows = self.windows;
        self.config
            .add(self.stream, "sliding-aggregate", |name, emit, backend| {
                SlidingAggregate::with_backend(
                    name,
                    windows,
                    emit,
                    Box::new(init),
                    Box::new(add),
                    backend,
                )
            })
    }

    /// Counts records per key and window.
    pub fn count(self) -> Stream<Windowed<K>, u64> {
        self.aggregate(|| 0u64, |n: &mut u64, _: &V| *n += 1)
    }
}

/// The `add` of a reduce: the first value, then each next one combined with `f`.
fn reducing<V: Clone + 'static>(
    f: impl Fn(&V, &V) -> V + Send + 'static,
) -> impl Fn(&mut Option<V>, &V) + Send + 'static {
    move |acc, v| {
        *acc = Some(match acc.take() {
            Some(a) => f(&a, v),
            None => v.clone(),
        });
    }
}
