//! A follower whose active segment's last batch got a flipped bit while it was down (silent
//! disk corruption): on restart it finds the batch by its CRC and cuts it off, fetches it
//! again from the leader, and ends byte-identical to the others; and while it catches up it is
//! never elected leader, not even when the leader dies meanwhile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace_testkit::faults::flip_bit;
use millrace_testkit::jepsen::topology;

use crate::common::*;

/// The newest segment file of a partition dir (names are zero-padded base offsets).
fn active_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    segments
        .pop()
        .unwrap_or_else(|| panic!("no segment in {}", dir.display()))
}

/// The byte range of the last whole batch of a segment file: batches are laid end to end,
/// each a base offset (8 bytes) and a length (4 bytes) followed by that many bytes.
fn last_batch(segment: &[u8]) -> (usize, usize) {
    let mut position = 0;
    let mut last = None;
    while position + 12 <= segment.len() {
        let length = i32::from_be_bytes(segment[position + 8..position + 12].try_into().unwrap());
        let end = position + 12 + length.max(0) as usize;
        if length <= 0 || end > segment.len() {
            break;
        }
        last = Some((position, end));
        position = end;
    }
    last.expect("the segment holds a whole batch")
}

#[test]
fn a_follower_with_a_corrupted_tail_truncates_re_replicates_and_is_never_elected() {
    run("a_follower_with_a_corrupted_tail", async {
        let topic = "corrupt-follower";
        let mut cluster = cluster_with_topic(topic, &[]).await;
        let bootstrap = cluster.bootstrap();
        let (recorder, mut running) =
            steady_load(&bootstrap, topic, 1, 500, "writes before the fault").await;

        let view = partition_view(&bootstrap, topic, 0).await;
        let leader = view.leader.expect("partition 0 has a leader");
        let follower = a_follower(&view);
        kill9_noted(
            &mut cluster,
            &recorder,
            follower,
            "a follower of partition 0",
        );
        let dir = cluster
            .node(follower)
            .spec
            .data_dir
            .join(format!("{topic}-0"));
        let segment = active_segment(&dir);
        let bytes = std::fs::read(&segment).unwrap();
        let (start, end) = last_batch(&bytes);
        // The batch's last byte is record data, covered by the batch CRC.
        flip_bit(&segment, (end - 1) as u64, 3).unwrap();
        recorder.note(format!(
            "flipped a bit at byte {} of {} (the last batch is bytes {start}..{end})",
            end - 1,
            segment.display()
        ));

        // Out of the ISR (fenced) before it returns, so that the watch below sees it come
        // back.
        wait_for_partition(
            &bootstrap,
            topic,
            0,
            Duration::from_secs(30),
            "the dead follower leaving the ISR",
            |v| !v.isr.contains(&follower),
        )
        .await;

        // Who leads partition 0, every 100 ms, until the follower is back in the ISR.
        let leaders: Arc<Mutex<Vec<i32>>> = Arc::default();
        let watching = tokio::spawn({
            let bootstrap = bootstrap.clone();
            let leaders = leaders.clone();
            async move {
                loop {
                    if let Ok(views) = topology::describe_partitions(&bootstrap, topic).await {
                        if let Some(v) = views.iter().find(|v| v.partition == 0) {
                            if let Some(l) = v.leader {
                                leaders.lock().unwrap().push(l);
                            }
                            if v.isr.contains(&follower) {
                                return;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        cluster.start(follower).unwrap();
        recorder.note(format!("broker {follower} restarted"));
        // The partition's log is opened (and recovered) when the broker applies the metadata,
        // which may be after it listens: look for the recovery's warning for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.node(follower).log_lines().iter().any(|line| {
            line.contains("truncating torn or corrupt tail of log segment")
                && line.contains(&format!("{topic}-0"))
        }) {
            assert!(
                Instant::now() < deadline,
                "broker {follower} did not log cutting the corrupt batch off {}",
                segment.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The leader dies while the follower may still be catching up: the other in-sync
        // replica must take over, never the follower that lost its tail.
        kill9_noted(&mut cluster, &recorder, leader, "the leader of partition 0");
        let successor =
            topology::wait_for_leader(&bootstrap, topic, 0, Some(leader), Duration::from_secs(30))
                .await
                .unwrap();
        recorder.note(format!("broker {successor} leads partition 0"));
        tokio::time::timeout(Duration::from_secs(60), watching)
            .await
            .expect("the follower rejoined the ISR within 60 s")
            .unwrap();
        let seen = leaders.lock().unwrap().clone();
        assert!(
            !seen.contains(&follower),
            "broker {follower} led partition 0 before it was back in sync (leaders seen: \
             {seen:?})"
        );
        wait_for_acks(&mut running, &recorder, 200, "writes after the failover").await;

        cluster.start(leader).unwrap();
        recorder.note(format!("broker {leader} restarted"));
        cluster
            .wait_for_brokers(Duration::from_secs(60))
            .await
            .unwrap();
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        wait_for_acks(&mut running, &recorder, 200, "writes after the restart").await;
        let summary = running.stop().await.unwrap();
        eprintln!("workload: {summary:?}");
        wait_for_full_isr(&bootstrap, topic, PARTITIONS).await;
        // The divergence check compares the repaired follower with the others byte for byte.
        check_everything(&bootstrap, topic, PARTITIONS, &recorder).await;
    });
}
