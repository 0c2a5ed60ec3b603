//! Reading a whole partition back, record by record: how the group and transaction
//! coordinators rebuild their state from `__consumer_offsets` and `__transaction_state` when
//! they become a partition's leader.

use kafka_protocol::records::{Record, RecordBatchDecoder};

use super::PartitionLog;

/// How much one read takes from the log.
const READ_BYTES: usize = 1 << 20;

/// Calls `each` with every record of `log` (control records included), from its log start to
/// its log end, in offset order. A batch that does not decode is skipped with an error naming
/// `topic`; a failed read ends the replay early, logged likewise, so a damaged log loses the
/// state it held rather than stopping the broker.
pub fn replay_records(log: &PartitionLog, topic: &str, mut each: impl FnMut(Record)) {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let mut buf = match log.read(offset, READ_BYTES) {
            Ok(chunk) if !chunk.is_empty() => chunk,
            Ok(_) => break,
            Err(error) => {
                tracing::error!(%error, "reading {topic} failed; what follows offset {offset} is not replayed");
                break;
            }
        };
        let mut next = offset;
        while !buf.is_empty() {
            let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
                break;
            };
            for record in set.records {
                next = next.max(record.offset + 1);
                // A read starts at the batch holding `offset`, which may begin before it.
                if record.offset >= offset {
                    each(record);
                }
            }
        }
        if next <= offset {
            // A batch we cannot decode: skip past it rather than loop forever.
            tracing::error!(offset, "undecodable batch in {topic}; skipping");
            next = offset + 1;
        }
        offset = next;
    }
}
