//! The windowed stream-stream join of the DSL: [`Stream::window_join`] and its builder.

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::record::Record;
use crate::state::backend::StateBackend;
use crate::windows::join::{JoinFn, JoinKind, JoinWindows, Side, WindowJoin};

use super::node::LateFn;
use super::stream::Stream;

impl<K, L, R> Stream<K, Side<L, R>>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + 'static,
    L: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Joins the left and right records of this stream (two inputs keyed alike, see
    /// [`crate::windows::join`]) whose event times are within `windows` of each other. Finish with
    /// [`WindowJoinBuilder::inner`], [`WindowJoinBuilder::left`] or
    /// [`WindowJoinBuilder::outer`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use millrace_streams::windows::join::{JoinWindows, Side};
    /// use millrace_streams::{Pipeline, Record, Stream};
    ///
    /// // Impressions (left) and clicks (right) per ad; a click counts within 10 s.
    /// let mut p = Pipeline::new(|ads: Stream<String, Side<u32, u32>>| {
    ///     ads.window_join(JoinWindows::of(Duration::from_secs(10)).no_grace())
    ///         .inner(|_ad, impression, click| (*impression, *click))
    /// });
    /// p.push(Record::new("ad1".to_string(), Side::Left(1), 1_000));
    /// p.push(Record::new("ad1".to_string(), Side::Right(7), 5_000));
    /// p.push(Record::new("ad1".to_string(), Side::Right(8), 30_000)); // too late after 1
    /// let out = p.take_output();
    /// assert_eq!(out.len(), 1);
    /// assert_eq!((out[0].value, out[0].timestamp), ((1, 7), 5_000));
    /// ```
    pub fn window_join(self, windows: JoinWindows) -> WindowJoinBuilder<K, L, R> {
        let backend = self.backend.clone();
        WindowJoinBuilder {
            stream: self,
            windows,
            name: None,
            on_late: None,
            backend,
        }
    }
}

/// A stream of two sides waiting for its join function (see [`Stream::window_join`]).
pub struct WindowJoinBuilder<K, L, R> {
    stream: Stream<K, Side<L, R>>,
    windows: JoinWindows,
    name: Option<String>,
    on_late: Option<LateFn<K, Side<L, R>>>,
    backend: StateBackend,
}

impl<K, L, R> WindowJoinBuilder<K, L, R>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + 'static,
    L: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Names the step and its state store (otherwise `join-<position>`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `f` with each late record.
    #[must_use]
    pub fn on_late(mut self, f: impl FnMut(&Record<K, Side<L, R>>) + Send + 'static) -> Self {
        self.on_late = Some(Box::new(f));
        self
    }

    /// Keeps the join buffers on disk (a [`crate::DiskStore`] file per task in `dir`), for
    /// buffers larger than memory (see [`crate::state::backend`]).
    #[must_use]
    pub fn on_disk(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.backend = StateBackend::on_disk(dir);
        self
    }

    /// Keeps the join buffers in memory, whatever the pipeline's backend.
    #[must_use]
    pub fn in_memory(mut self) -> Self {
        self.backend = StateBackend::InMemory;
        self
    }

    /// Emits `join(key, left, right)` for every pair within the window.
    pub fn inner<O: Send + 'static>(
        self,
        join: impl Fn(&K, &L, &R) -> O + Send + 'static,
    ) -> Stream<K, O> {
        self.build(
            JoinKind::Inner,
            Box::new(move |k, l, r| match (l, r) {
                (Some(l), Some(r)) => Some(join(k, l, r)),
                _ => None,
            }),
        )
    }

    /// Like [`WindowJoinBuilder::inner`], and each left record that matched nothing is
    /// emitted with `None` once its window has closed.
    pub fn left<O: Send + 'static>(
        self,
        join: impl Fn(&K, &L, Option<&R>) -> O + Send + 'static,
    ) -> Stream<K, O> {
        self.build(
            JoinKind::Left,
            Box::new(move |k, l, r| l.map(|l| join(k, l, r))),
        )
    }

    /// Like [`WindowJoinBuilder::left`], for records of both sides.
    pub fn outer<O: Send + 'static>(
        self,
        join: impl Fn(&K, Option<&L>, Option<&R>) -> O + Send + 'static,
    ) -> Stream<K, O> {
        self.build(
            JoinKind::Outer,
            Box::new(move |k, l, r| Some(join(k, l, r))),
        )
    }

    fn build<O: Send + 'static>(self, kind: JoinKind, joiner: JoinFn<K, L, R, O>) -> Stream<K, O> {
        let stateful = self.stream.stateful;
        let name = self.name.unwrap_or_else(|| format!("join-{stateful}"));
        let op = WindowJoin::with_backend(name, self.windows, kind, joiner, &self.backend);
        self.stream.operator(op, self.on_late)
    }
}
