//! `GET /metrics`: Prometheus text exposition format (version 0.0.4) of partition offsets
//! and sizes, group lag, and the counters of the jobs and connectors handed in.

use std::fmt::Write as _;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::Ctx;
use crate::AppState;

/// `GET /metrics`. Cluster series come from the last sample; when there is none yet they are
/// absent and `millrace_dashboard_cluster_up` is 0.
pub async fn metrics(Ctx(state): Ctx) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&state),
    )
        .into_response()
}

/// Writes one metric family: `# HELP`, `# TYPE`, then the samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let rendered: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", rendered.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(state: &AppState) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let sample = state.cluster.peek();
    f.header(
        "millrace_dashboard_cluster_up",
        "gauge",
        "1 when the last cluster sample succeeded.",
    );
    let up = sample.is_some() && state.cluster.last_error().is_none();
    f.sample("millrace_dashboard_cluster_up", &[], u8::from(up));
    if let Some(sample) = &sample {
        f.header("millrace_brokers", "gauge", "Brokers in the cluster.");
        f.sample("millrace_brokers", &[], sample.cluster.brokers.len());
        // Kafka's replication health gauges, computed from Metadata (Kafka's JMX names in
        // the help text, for dashboards ported from Kafka).
        let leadership = sample.leadership();
        f.header(
            "millrace_under_replicated_partitions",
            "gauge",
            "Partitions a broker leads whose ISR is smaller than the replica set (Kafka: kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions).",
        );
        for (broker, (_, under_replicated)) in &leadership {
            f.sample(
                "millrace_under_replicated_partitions",
                &[("broker", &broker.to_string())],
                under_replicated,
            );
        }
        f.header(
            "millrace_leader_partitions",
            "gauge",
            "Partitions a broker leads (Kafka: kafka.server:type=ReplicaManager,name=LeaderCount).",
        );
        for (broker, (leaders, _)) in &leadership {
            f.sample(
                "millrace_leader_partitions",
                &[("broker", &broker.to_string())],
                leaders,
            );
        }
        f.header(
            "millrace_offline_partitions",
            "gauge",
            "Partitions without a leader (Kafka: kafka.controller:type=KafkaController,name=OfflinePartitionsCount).",
        );
        f.sample(
            "millrace_offline_partitions",
            &[],
            sample.offline_partitions(),
        );
        f.header(
            "millrace_active_controller",
            "gauge",
            "1 on the broker that is the active controller, 0 on the others; the sum is 1 in a healthy cluster (Kafka: kafka.controller:type=KafkaController,name=ActiveControllerCount).",
        );
        for b in &sample.cluster.brokers {
            f.sample(
                "millrace_active_controller",
                &[("broker", &b.id.to_string())],
                u8::from(b.id == sample.cluster.controller_id),
            );
        }
        // Kafka counts these on the leader as they happen; the console counts the changes it
        // sees between two samples (a shrink and re-expansion inside one interval is missed).
        let isr_changes = state.cluster.isr_changes();
        f.header(
            "millrace_isr_shrinks_total",
            "counter",
            "ISR shrinks seen since the console started, per partition leader (Kafka: kafka.server:type=ReplicaManager,name=IsrShrinksPerSec).",
        );
        // Every broker has its series from the start (a counter at 0), plus any leader that
        // has since left the cluster.
        let mut isr_changes = isr_changes;
        for b in &sample.cluster.brokers {
            isr_changes.entry(b.id).or_default();
        }
        isr_changes.remove(&-1);
        for (broker, (shrinks, _)) in &isr_changes {
            f.sample(
                "millrace_isr_shrinks_total",
                &[("broker", &broker.to_string())],
                shrinks,
            );
        }
        f.header(
            "millrace_isr_expands_total",
            "counter",
            "ISR expansions seen since the console started, per partition leader (Kafka: kafka.server:type=ReplicaManager,name=IsrExpandsPerSec).",
        );
        for (broker, (_, expands)) in &isr_changes {
            f.sample(
                "millrace_isr_expands_total",
                &[("broker", &broker.to_string())],
                expands,
            );
        }
        f.header(
            "millrace_broker_fenced",
            "gauge",
            "1 when the controller fenced the broker (Kafka: kafka.controller:type=KafkaController,name=FencedBrokerCount, per broker).",
        );
        for b in &sample.cluster.brokers {
            f.sample(
                "millrace_broker_fenced",
                &[("broker", &b.id.to_string())],
                u8::from(b.fenced),
            );
        }
        type PartitionValue = fn(&crate::sampler::PartitionSample) -> Option<i64>;
        let families: [(&str, &str, PartitionValue); 3] = [
            (
                "millrace_partition_start_offset",
                "Log start offset of a partition.",
                |p| Some(p.start_offset),
            ),
            (
                "millrace_partition_end_offset",
                "Log end offset (high watermark) of a partition.",
                |p| Some(p.end_offset),
            ),
            (
                "millrace_partition_size_bytes",
                "Bytes of a partition on disk.",
                |p| p.size_bytes,
            ),
        ];
        for (name, help, value) in families {
            f.header(name, "gauge", help);
            for topic in sample.topics.values() {
                for p in &topic.partitions {
                    if let Some(v) = value(p) {
                        let partition = p.partition.to_string();
                        f.sample(
                            name,
                            &[("topic", &topic.name), ("partition", &partition)],
                            v,
                        );
                    }
                }
            }
        }
        f.header(
            "millrace_topic_produce_rate",
            "gauge",
            "Records per second produced to a topic over the last ~10 s.",
        );
        for topic in sample.topics.values() {
            f.sample(
                "millrace_topic_produce_rate",
                &[("topic", &topic.name)],
                state.cluster.topic_rate(&topic.name),
            );
        }
        f.header(
            "millrace_group_lag",
            "gauge",
            "Records between a group's committed offset and the log end, per partition.",
        );
        for group in sample.groups.values() {
            for p in &group.partitions {
                let partition = p.partition.to_string();
                f.sample(
                    "millrace_group_lag",
                    &[
                        ("group", &group.group_id),
                        ("topic", &p.topic),
                        ("partition", &partition),
                    ],
                    p.lag,
                );
            }
        }
        f.header(
            "millrace_group_members",
            "gauge",
            "Members of a consumer group.",
        );
        for group in sample.groups.values() {
            f.sample(
                "millrace_group_members",
                &[("group", &group.group_id)],
                group.members.len(),
            );
        }
    }
    // Job counters: every field of the snapshot, counters as `_total`.
    let jobs: Vec<(String, serde_json::Value)> = state
        .jobs
        .iter()
        .map(|j| {
            (
                j.name.clone(),
                serde_json::to_value(j.metrics.snapshot()).unwrap_or_default(),
            )
        })
        .collect();
    let job_fields: &[(&str, &str, &str)] = &[
        (
            "records_in",
            "counter",
            "Records read from the source topics.",
        ),
        ("records_out", "counter", "Records written to the sink."),
        (
            "late_records",
            "counter",
            "Records that arrived after their window closed.",
        ),
        (
            "bad_records",
            "counter",
            "Records that could not be decoded or encoded.",
        ),
        (
            "duplicates_dropped",
            "counter",
            "Records dropped by dedupe.",
        ),
        ("commits", "counter", "Commits completed."),
        (
            "last_commit_micros",
            "gauge",
            "Duration of the last commit in microseconds.",
        ),
        ("state_entries", "gauge", "Live state entries."),
        (
            "tasks",
            "gauge",
            "Tasks (input partitions) this instance runs.",
        ),
        (
            "lag",
            "gauge",
            "Records behind the end of the source partitions.",
        ),
        (
            "watermark",
            "gauge",
            "Smallest watermark over the tasks (ms since the epoch).",
        ),
    ];
    if !jobs.is_empty() {
        for (field, kind, help) in job_fields {
            let name = if *kind == "counter" {
                format!("millrace_job_{field}_total")
            } else {
                format!("millrace_job_{field}")
            };
            f.header(&name, kind, help);
            for (job, values) in &jobs {
                if let Some(v) = values.get(*field) {
                    f.sample(&name, &[("job", job)], v);
                }
            }
        }
    }
    if !state.connectors.is_empty() {
        let snapshots: Vec<(&str, millrace_connectors::MetricsSnapshot)> = state
            .connectors
            .iter()
            .map(|c| (c.name.as_str(), c.metrics.snapshot()))
            .collect();
        type SinkValue = fn(&millrace_connectors::MetricsSnapshot) -> i64;
        let families: [(&str, &str, &str, SinkValue); 6] = [
            (
                "millrace_connector_records_in_total",
                "counter",
                "Records read from Kafka.",
                |s| s.records_in as i64,
            ),
            (
                "millrace_connector_records_written_total",
                "counter",
                "Records in committed files.",
                |s| s.records_written as i64,
            ),
            (
                "millrace_connector_bytes_written_total",
                "counter",
                "Bytes of committed files.",
                |s| s.bytes_written as i64,
            ),
            (
                "millrace_connector_files_committed_total",
                "counter",
                "Files committed.",
                |s| s.files_committed as i64,
            ),
            (
                "millrace_connector_dead_lettered_total",
                "counter",
                "Records sent to the dead-letter topic.",
                |s| s.dead_lettered as i64,
            ),
            (
                "millrace_connector_lag",
                "gauge",
                "Records behind the end of the assigned partitions.",
                |s| s.lag,
            ),
        ];
        for (name, kind, help, value) in families {
            f.header(name, kind, help);
            for (connector, snapshot) in &snapshots {
                f.sample(name, &[("connector", connector)], value(snapshot));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
