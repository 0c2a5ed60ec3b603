//! The typed job DSL: build a [`Stream`] of steps, get a [`Pipeline`] to push records into.
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};
//!
//! let mut pipeline = Pipeline::new(|views: Stream<String, u32>| {
//!     views
//!         .filter(|_user, &ms| ms > 0)
//!         .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
//!         .emit(EmitMode::Final)
//!         .count()
//! });
//! pipeline.push(Record::new("ann".to_string(), 120, 1_000));
//! pipeline.push(Record::new("ann".to_string(), 80, 2_000));
//! pipeline.finish();
//! let out = pipeline.take_output();
//! assert_eq!(out[0].value, 2);
//! assert_eq!((out[0].key.window_start, out[0].key.window_end), (0, 60_000));
//! ```
//!
//! How it is wired: a `Stream<K, V>` is a recipe that, given the step that consumes its
//! records, builds the chain back to the source. Steps are boxed nodes linked by plain calls,
//! so a record goes through the whole chain with no queue and no allocation, and the pipeline
//! is `Send` (the runtime can move a task to another thread). The source type is erased while
//! building and recovered once, when [`Pipeline::new`] finishes the chain.
//!
//! - [`stream`]: [`Stream`], its stateless steps and table joins;
//! - [`windowed`]: windowed streams and their aggregations;
//! - [`join`]: windowed stream-stream joins;
//! - [`pipeline`]: the [`Pipeline`] that runs a built chain;
//! - `node`: the chain itself.

pub mod join;
mod node;
pub mod pipeline;
pub mod stream;
pub mod windowed;

pub use join::WindowJoinBuilder;
pub use node::LateFn;
pub use pipeline::{Checkpoint, Pipeline, StoreChanges, StoreSnapshot};
pub use stream::Stream;
pub use windowed::{SessionWindowedStream, SlidingWindowedStream, WindowedStream};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::record::{Record, Windowed};
    use crate::windows::{EmitMode, Windows};

    const SEC: Duration = Duration::from_secs(1);

    fn values<K, V>(p: &mut Pipeline<impl Send + 'static, impl Send + 'static, K, V>) -> Vec<V>
    where
        K: Send + 'static,
        V: Send + 'static,
    {
        p.take_output().into_iter().map(|r| r.value).collect()
    }

    #[test]
    fn map_filter_and_map_values_compose_in_order() {
        let mut p = Pipeline::new(|s: Stream<u32, i32>| {
            s.map(|k, v| (k, v * 10))
                .filter(|_, v| *v > 10)
                .map_values(|v| v + 1)
        });
        for v in [1, 2, 3] {
            p.push(Record::new(0, v, 0));
        }
        assert_eq!(values(&mut p), vec![21, 31]);
    }

    #[test]
    fn flat_map_keeps_event_time_and_input_position() {
        let mut p = Pipeline::new(|s: Stream<(), String>| {
            s.flat_map(|_, line: String| {
                line.split(' ')
                    .map(|w| (w.to_string(), 1u32))
                    .collect::<Vec<_>>()
            })
        });
        p.push(Record::new((), "a b".to_string(), 42).at(3, 9));
        let out: Vec<_> = p
            .take_output()
            .into_iter()
            .map(|r| (r.key, r.timestamp, r.partition, r.offset))
            .collect();
        assert_eq!(out, vec![("a".into(), 42, 3, 9), ("b".into(), 42, 3, 9)]);
    }

    #[test]
    fn key_by_regroups_windowed_counts() {
        let mut p = Pipeline::new(|s: Stream<String, String>| {
            s.key_by(|_, campaign| campaign.clone())
                .window(Windows::tumbling(60 * SEC).no_grace())
                .emit(EmitMode::Final)
                .count()
        });
        for (user, campaign) in [("u1", "c"), ("u2", "c"), ("u3", "d")] {
            p.push(Record::new(user.to_string(), campaign.to_string(), 0));
        }
        p.finish();
        let got: Vec<_> = p
            .take_output()
            .into_iter()
            .map(|r| (r.key.key, r.value))
            .collect();
        assert_eq!(got, vec![("c".to_string(), 2), ("d".to_string(), 1)]);
    }

    #[test]
    fn inspect_sees_every_record_unchanged() {
        let seen = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&seen);
        let mut p = Pipeline::new(move |s: Stream<u8, u8>| {
            s.inspect(move |_| *counter.lock().unwrap() += 1)
        });
        p.push(Record::new(1, 2, 0));
        p.push(Record::new(1, 3, 0));
        assert_eq!((*seen.lock().unwrap(), values(&mut p)), (2, vec![2, 3]));
    }

    #[test]
    fn reduce_combines_values_per_window() {
        let mut p = Pipeline::new(|s: Stream<u8, i64>| {
            s.window(Windows::tumbling(10 * SEC).no_grace())
                .emit(EmitMode::Final)
                .reduce(|a, b| (*a).max(*b))
        });
        for v in [3, 9, 4] {
            p.push(Record::new(1, v, 0));
        }
        p.finish();
        assert_eq!(values(&mut p), vec![9]);
    }

    #[test]
    fn session_reduce_merges_with_the_same_function() {
        let mut p = Pipeline::new(|s: Stream<u8, i64>| {
            s.session_window(Windows::session(10 * SEC).no_grace())
                .emit(EmitMode::Final)
                .reduce(|a, b| a + b)
        })
        .event_time(60 * SEC, None);
        for (v, t) in [(1, 0), (2, 20_000), (4, 10_000)] {
            p.push(Record::new(1, v, t));
        }
        p.finish();
        assert_eq!(values(&mut p), vec![7]);
    }

    fn two_partition_count() -> Pipeline<u8, (), Windowed<u8>, u64> {
        Pipeline::new(|s: Stream<u8, ()>| {
            s.window(Windows::tumbling(10 * SEC).no_grace())
                .emit(EmitMode::Final)
                .count()
        })
        .event_time(Duration::ZERO, Some(5 * SEC))
    }

    #[test]
    fn slow_partition_holds_windows_open() {
        let mut p = two_partition_count();
        p.assign(0);
        p.assign(1);
        p.push(Record::new(1, (), 1_000).at(0, 0));
        p.push(Record::new(1, (), 30_000).at(1, 0));
        assert!(p.take_output().is_empty());
    }

    #[test]
    fn idle_partition_stops_holding_windows_open() {
        let mut p = two_partition_count();
        p.assign(0);
        p.assign(1);
        p.push(Record::new(1, (), 1_000).at(0, 0));
        p.advance(4_000);
        p.push(Record::new(1, (), 30_000).at(1, 0));
        p.advance(5_000);
        assert_eq!(values(&mut p), vec![1]);
    }

    #[test]
    fn commit_reports_offsets_and_one_batch_per_store() {
        let mut p = Pipeline::new(|s: Stream<u8, ()>| {
            s.dedupe(SEC, |k, _| *k)
                .window(Windows::tumbling(SEC).no_grace())
                .count()
        });
        p.push(Record::new(1, (), 0).at(2, 7));
        let cp = p.commit().unwrap();
        let names: Vec<_> = cp.stores.iter().map(|s| s.store.as_str()).collect();
        assert_eq!(
            (cp.offsets.get(&2), names),
            (Some(&8), vec!["dedupe-0", "aggregate-1"])
        );
    }

    #[test]
    fn named_window_uses_the_name_for_its_store() {
        let mut p = Pipeline::new(|s: Stream<u8, ()>| {
            s.window(Windows::tumbling(SEC).no_grace())
                .named("clicks-per-minute")
                .count()
        });
        assert_eq!(p.commit().unwrap().stores[0].store, "clicks-per-minute");
    }

    #[test]
    fn stateless_pipeline_commits_offsets_only() {
        let mut p = Pipeline::new(|s: Stream<u8, u8>| s);
        p.push(Record::new(1, 1, 0).at(0, 0));
        let cp = p.commit().unwrap();
        assert_eq!((cp.offsets.get(&0), cp.stores.len()), (Some(&1), 0));
    }

    #[test]
    fn pipeline_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let p =
            Pipeline::new(|s: Stream<u8, u8>| s.window(Windows::tumbling(SEC).no_grace()).count());
        assert_send(&p);
    }
}
