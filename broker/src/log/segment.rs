//! A log segment: one `.log` file of record batches plus its `.index` and `.timeindex`.
//!
//! Segments only grow at the end and are never rewritten in place (compaction writes a new file
//! and renames it over the old one), which is what lets readers use plain positioned reads on a
//! shared file handle while an append is in flight: a reader never looks past the size that was
//! published after the last complete write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use tracing::{debug, warn};

use super::batch::{crc_matches, BatchHeader, HEADER_SIZE, LOG_OVERHEAD};
use super::index::{write_index_file, OffsetEntry, SparseIndex};
use super::time_index::TimeEntry;

/// File name of a segment file: the base offset, zero-padded to 20 digits, and the extension.
pub(crate) fn segment_file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses a segment base offset out of a file name like `00000000000000000042.log`.
pub(crate) fn parse_segment_name(name: &str, extension: &str) -> Option<i64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// "No batch yet" for the max timestamp: below every real timestamp, including -1.
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    /// Appended to every file name: empty, or `.cleaned` while the cleaner builds a replacement.
    suffix: &'static str,
    /// Shared with readers and the flusher, which use it without holding the log's locks.
    log: Arc<File>,
    offset_index: SparseIndex<OffsetEntry>,
    time_index: SparseIndex<TimeEntry>,
    /// Published size: everything before it is whole, valid batches.
    size: u64,
    /// The offset after the last batch of this segment.
    next_offset: i64,
    /// Largest batch max timestamp, or [`NO_TIMESTAMP`].
    max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`.
    max_timestamp_offset: i64,
    /// Reference time for rolling by age.
    created_ms: i64,
    /// Log bytes appended since the last offset index entry.
    bytes_since_index: u64,
}

/// What a scan of a segment's batches found.
struct ScanOutcome {
    /// Bytes of whole, valid batches from the start of the file.
    valid_size: u64,
}

impl LogSegment {
    /// Path of this segment's file with `extension` (`log`, `index`, `timeindex`).
    pub(crate) fn path(&self, extension: &str) -> PathBuf {
        let mut name = segment_file_name(self.base_offset, extension);
        name.push_str(self.suffix);
        self.dir.join(name)
    }

    /// Creates a new, empty active segment.
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<LogSegment> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // Indexes of an older segment with this name would describe other bytes.
        for ext in ["index", "timeindex"] {
            remove_if_exists(&dir.join(segment_file_name(base_offset, ext)))?;
        }
        Ok(LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            suffix: "",
            log: Arc::new(file),
            offset_index: SparseIndex::memory(),
            time_index: SparseIndex::memory(),
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            max_timestamp_offset: base_offset,
            created_ms: now_ms,
            bytes_since_index: 0,
        })
    }

    /// Opens an existing `.log` file (with `suffix`) for reading and writing.
    fn open_log(dir: &Path, base_offset: i64, suffix: &str) -> io::Result<File> {
        let mut name = segment_file_name(base_offset, "log");
        name.push_str(suffix);
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(name))
    }

    /// Recovers a segment by scanning every batch: validates length, magic, CRC and offsets,
    /// truncates the file at the first torn or corrupt batch and rebuilds both indexes in
    /// memory. Used for the active segment at start-up and for any segment whose index files
    /// cannot be trusted.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
    ) -> io::Result<LogSegment> {
        Self::recover_with_suffix(dir, base_offset, index_interval, "")
    }

    /// [`Self::recover`] for a segment whose files carry `suffix` (the cleaner's output).
    pub(crate) fn recover_with_suffix(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        suffix: &'static str,
    ) -> io::Result<LogSegment> {
        Self::load_scanned(dir, base_offset, index_interval, suffix, None)
    }

    /// The segment as it will be once cut at byte `cut` (a batch boundary), as the writable
    /// active segment with in-memory indexes rebuilt by scanning `[0, cut)`. Opens its own
    /// handle and changes no file: the caller publishes it first, then cuts the file with
    /// [`Self::cut_file`], so readers of the old segment never meet a file shorter than the
    /// size they were given before the new one is published.
    pub(crate) fn reopen_truncated(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        cut: u64,
    ) -> io::Result<LogSegment> {
        Self::load_scanned(dir, base_offset, index_interval, "", Some(cut))
    }

    /// Cuts the file to the published size and fsyncs it (after [`Self::reopen_truncated`]).
    pub(crate) fn cut_file(&self) -> io::Result<()> {
        self.log.set_len(self.size)?;
        self.log.sync_all()
    }

    /// Builds a segment by scanning its batches: the whole file with CRC checks, truncating a
    /// torn or corrupt tail (`limit` None, recovery), or `[0, limit)` trusting the CRCs of data
    /// already validated and changing nothing on disk (`limit` Some, truncation).
    fn load_scanned(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        suffix: &'static str,
        limit: Option<u64>,
    ) -> io::Result<LogSegment> {
        let file = Self::open_log(dir, base_offset, suffix)?;
        let meta = file.metadata()?;
        let file_len = limit.map_or(meta.len(), |l| l.min(meta.len()));
        let mut seg = LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            suffix,
            log: Arc::new(file),
            offset_index: SparseIndex::memory(),
            time_index: SparseIndex::memory(),
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            max_timestamp_offset: base_offset,
            created_ms: mtime_ms(&meta),
            bytes_since_index: 0,
        };
        let mut first_batch_ts = None;
        let log = Arc::clone(&seg.log);
        let verify_crc = limit.is_none();
        let outcome = scan_batches(&log, file_len, base_offset, verify_crc, |pos, h, size| {
            first_batch_ts.get_or_insert(h.max_timestamp);
            seg.track_batch(pos, h, size, index_interval);
        })?;
        if limit.is_some() {
            if outcome.valid_size < file_len {
                warn!(segment = %seg.path("log").display(), cut = file_len, valid = outcome.valid_size, "malformed batch before the truncation point; cutting there");
            }
        } else if outcome.valid_size < file_len {
            warn!(
                segment = %seg.path("log").display(),
                dropped_bytes = file_len - outcome.valid_size,
                "truncating torn or corrupt tail of log segment"
            );
            log.set_len(outcome.valid_size)?;
            log.sync_all()?;
        }
        // Age counts from the first batch's timestamp, as Kafka's roll does; the file's
        // mtime when there is no usable one.
        if let Some(ts) = first_batch_ts.filter(|&ts| ts >= 0) {
            seg.created_ms = ts;
        }
        debug!(
            base_offset,
            next_offset = seg.next_offset,
            size = seg.size,
            "recovered segment"
        );
        Ok(seg)
    }

    /// Opens a closed segment, trusting its data and, if they look sane, its index files;
    /// otherwise recovers it and rewrites them.
    pub(crate) fn open_closed(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
    ) -> io::Result<LogSegment> {
        match Self::try_open_closed(dir, base_offset)? {
            Some(seg) => Ok(seg),
            None => {
                warn!(base_offset, dir = %dir.display(), "rebuilding indexes of closed segment");
                let mut seg = Self::recover(dir, base_offset, index_interval)?;
                seg.seal()?;
                Ok(seg)
            }
        }
    }

    /// Opens a closed segment from its index files; `None` if they are missing or inconsistent.
    fn try_open_closed(dir: &Path, base_offset: i64) -> io::Result<Option<LogSegment>> {
        let file = Self::open_log(dir, base_offset, "")?;
        let meta = file.metadata()?;
        let size = meta.len();
        let open_index = |ext: &str| -> io::Result<Option<File>> {
            match File::open(dir.join(segment_file_name(base_offset, ext))) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let (Some(oi), Some(ti)) = (open_index("index")?, open_index("timeindex")?) else {
            return Ok(None);
        };
        let (oi_len, ti_len) = (oi.metadata()?.len(), ti.metadata()?.len());
        if oi_len % 8 != 0 || ti_len % 12 != 0 {
            return Ok(None);
        }
        let offset_index: SparseIndex<OffsetEntry> = SparseIndex::File {
            file: oi,
            entries: oi_len / 8,
        };
        let time_index: SparseIndex<TimeEntry> = SparseIndex::File {
            file: ti,
            entries: ti_len / 12,
        };
        // Find the end of the segment from the last indexed batch; this also checks that the
        // last index entry points at a batch boundary with the offset it claims.
        let last_entry = offset_index.last()?;
        let start = match last_entry {
            Some(e) if u64::from(e.position) < size => u64::from(e.position),
            Some(_) => return Ok(None),
            None => 0,
        };
        let mut next_offset = base_offset;
        let mut pos = start;
        let mut first = true;
        while pos < size {
            let Some((h, batch_size)) = read_header_at(&file, pos, size)? else {
                return Ok(None);
            };
            if first {
                if let Some(e) = last_entry {
                    if h.base_offset != base_offset + i64::from(e.relative_offset) {
                        return Ok(None);
                    }
                }
                first = false;
            }
            next_offset = h.next_offset();
            pos += batch_size;
        }
        let (max_timestamp, max_timestamp_offset) = match time_index.last()? {
            Some(t) => (t.timestamp, base_offset + i64::from(t.relative_offset)),
            None if size == 0 => (NO_TIMESTAMP, base_offset),
            None => return Ok(None),
        };
        if max_timestamp_offset >= next_offset && size > 0 {
            return Ok(None);
        }
        Ok(Some(LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            suffix: "",
            log: Arc::new(file),
            offset_index,
            time_index,
            size,
            next_offset,
            max_timestamp,
            max_timestamp_offset,
            created_ms: mtime_ms(&meta),
            bytes_since_index: 0,
        }))
    }

    /// Records a batch written at `pos`: updates size, offsets, max timestamp and the sparse
    /// indexes (one offset entry per `index_interval` bytes; a time entry when the max grew).
    pub(crate) fn track_batch(
        &mut self,
        pos: u64,
        header: &BatchHeader,
        size: u64,
        index_interval: u64,
    ) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_offset = header.base_offset;
        }
        if self.bytes_since_index >= index_interval {
            // Positions fit in u32 because segments are capped below 2 GiB (plus one batch).
            self.offset_index.push(OffsetEntry {
                relative_offset: self.relative(header.base_offset),
                position: pos as u32,
            });
            self.maybe_push_time_entry();
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
        self.size = pos + size;
        self.next_offset = header.next_offset();
    }

    /// `offset` relative to the base offset, as index entries store it.
    fn relative(&self, offset: i64) -> u32 {
        (offset - self.base_offset) as u32
    }

    /// Adds a time index entry for the current max timestamp if it grew since the last one.
    fn maybe_push_time_entry(&mut self) {
        if self.max_timestamp == NO_TIMESTAMP {
            return;
        }
        let grew = match self.time_index.last() {
            Ok(Some(last)) => self.max_timestamp > last.timestamp,
            _ => true,
        };
        if grew {
            self.time_index.push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.relative(self.max_timestamp_offset),
            });
        }
    }

    /// Makes the segment durable: cuts anything past the published size (left by a failed
    /// write), fsyncs the log, and for the active segment writes both index files (the time
    /// index ends with the segment's max timestamp, which is how a closed segment's max is
    /// found after a restart). Takes `&self` so readers can keep using the segment meanwhile.
    pub(crate) fn seal_files(&self) -> io::Result<()> {
        if self.log.metadata()?.len() != self.size {
            self.log.set_len(self.size)?;
        }
        self.log.sync_all()?;
        if self.is_active() {
            let offsets = self.offset_index.entries()?;
            let mut times = self.time_index.entries()?;
            if self.max_timestamp != NO_TIMESTAMP
                && times
                    .last()
                    .is_none_or(|t| self.max_timestamp > t.timestamp)
            {
                times.push(TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset: self.relative(self.max_timestamp_offset),
                });
            }
            write_index_file(&self.path("index"), &offsets)?;
            write_index_file(&self.path("timeindex"), &times)?;
        }
        Ok(())
    }

    /// Switches a sealed active segment to its index files, dropping the in-memory entries.
    pub(crate) fn switch_to_index_files(&mut self) -> io::Result<()> {
        if self.is_active() {
            self.offset_index = SparseIndex::open_file(&self.path("index"))?;
            self.time_index = SparseIndex::open_file(&self.path("timeindex"))?;
        }
        Ok(())
    }

    /// [`Self::seal_files`] then [`Self::switch_to_index_files`].
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        self.seal_files()?;
        self.switch_to_index_files()
    }

    /// Whether the segment is still the writable, in-memory-indexed active segment.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.offset_index, SparseIndex::Memory(_))
    }

    /// File position from which to scan for the batch containing `offset`.
    pub(crate) fn position_for(&self, offset: i64) -> io::Result<u64> {
        if offset <= self.base_offset {
            return Ok(0);
        }
        let rel = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        Ok(self
            .offset_index
            .lookup(rel)?
            .map_or(0, |e| u64::from(e.position)))
    }

    /// File position from which to scan for the first batch with max timestamp >= `timestamp`.
    pub(crate) fn position_for_timestamp(&self, timestamp: i64) -> io::Result<u64> {
        match self.time_index.lookup(timestamp)? {
            Some(e) => self.position_for(self.base_offset + i64::from(e.relative_offset)),
            None => Ok(0),
        }
    }

    /// Removes the index files of a closed segment that became the active one again (its
    /// indexes are in memory now, and the files describe bytes that were cut).
    pub(crate) fn remove_index_files(&self) -> io::Result<()> {
        for ext in ["index", "timeindex"] {
            remove_if_exists(&self.path(ext))?;
        }
        Ok(())
    }

    /// The header of the segment's first batch, if any.
    pub(crate) fn first_header(&self) -> io::Result<Option<BatchHeader>> {
        Ok(read_header_at(&self.log, 0, self.size)?.map(|(h, _)| h))
    }

    /// The header of the segment's last batch, if any: found from the index entry nearest the
    /// end, so it reads a few headers, not the segment.
    pub(crate) fn last_header(&self) -> io::Result<Option<BatchHeader>> {
        let mut last = None;
        let start = self.position_for(self.next_offset.saturating_sub(1))?;
        for_each_header(&self.log, start, self.size, |_, h, _| {
            last = Some(*h);
            Ok(true)
        })?;
        Ok(last)
    }

    /// Calls `visit` with every batch header of the segment, in order, reading in large chunks
    /// (no CRC checks: the data was validated when written).
    pub(crate) fn scan_headers(&self, mut visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        scan_batches(&self.log, self.size, self.base_offset, false, |_, h, _| {
            visit(h)
        })?;
        Ok(())
    }

    /// Removes the segment's files. Readers holding the file handle can still finish.
    pub(crate) fn delete_files(&self) -> io::Result<()> {
        for ext in ["log", "index", "timeindex", super::txn_index::TXN_INDEX_EXT] {
            remove_if_exists(&self.path(ext))?;
        }
        Ok(())
    }

    /// The first offset this segment may hold.
    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The offset after the segment's last batch.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Published size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Largest batch max timestamp, or [`NO_TIMESTAMP`] when empty.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Base offset of the first batch holding the max timestamp.
    pub(crate) fn max_timestamp_offset(&self) -> i64 {
        self.max_timestamp_offset
    }

    /// Sets the reference time for rolling by age.
    pub(crate) fn set_created_ms(&mut self, ms: i64) {
        self.created_ms = ms;
    }

    /// Reference time for rolling by age.
    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The shared log file handle.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.log
    }

    /// Last-modified time of the log file in ms (retention fallback for segments without
    /// timestamps).
    pub(crate) fn modified_ms(&self) -> i64 {
        self.log.metadata().map(|m| mtime_ms(&m)).unwrap_or(0)
    }
}

/// Removes a file, treating "already gone" as success.
fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A file's modification time in ms since the epoch (0 if unavailable).
fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// An I/O error for malformed data found where only valid batches should be.
pub(crate) fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads the header of the batch at `pos` in a file whose valid data ends at `end`.
/// `Ok(None)` when the header or the batch would not end by `end` or the length is illegal.
pub(crate) fn read_header_at(
    file: &File,
    pos: u64,
    end: u64,
) -> io::Result<Option<(BatchHeader, u64)>> {
    if pos + HEADER_SIZE as u64 > end {
        return Ok(None);
    }
    let mut buf = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut buf, pos)?;
    let Some(h) = BatchHeader::parse(&buf) else {
        return Ok(None);
    };
    match h.total_size() {
        Some(size) if h.magic == 2 && pos + size as u64 <= end => Ok(Some((h, size as u64))),
        _ => Ok(None),
    }
}

/// Scans whole batches from the start of `file` up to `file_len`, calling `on_batch` for each
/// valid one, and stops at the first that is torn, malformed, out of offset order or (with
/// `verify_crc`) fails its CRC. Reads in large chunks, so a scan costs about one pass of I/O.
fn scan_batches(
    file: &File,
    file_len: u64,
    base_offset: i64,
    verify_crc: bool,
    mut on_batch: impl FnMut(u64, &BatchHeader, u64),
) -> io::Result<ScanOutcome> {
    const CHUNK: usize = 1 << 20;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = 0u64; // file position of buf[0]
    let mut pos = 0u64;
    let mut expected_min_offset = base_offset;
    loop {
        let avail = (buf_start + buf.len() as u64).saturating_sub(pos) as usize;
        let off = (pos - buf_start) as usize;
        // Make sure the header is buffered.
        if avail < HEADER_SIZE {
            if pos + HEADER_SIZE as u64 > file_len {
                break;
            }
            let want = CHUNK.min((file_len - pos) as usize);
            buf.resize(want, 0);
            file.read_exact_at(&mut buf, pos)?;
            buf_start = pos;
            continue;
        }
        let Some(h) = BatchHeader::parse(&buf[off..]) else {
            break;
        };
        let Some(size) = h.total_size() else {
            break;
        };
        if h.magic != 2
            || h.base_offset < expected_min_offset
            || h.last_offset_delta < 0
            || h.record_count < 0
            || pos + size as u64 > file_len
        {
            break;
        }
        if avail < size {
            // The whole batch is needed for its CRC: refill from this batch's start.
            let want = size.max(CHUNK.min((file_len - pos) as usize));
            buf.resize(want, 0);
            file.read_exact_at(&mut buf, pos)?;
            buf_start = pos;
            continue;
        }
        if verify_crc && !crc_matches(&buf[off..off + size], &h) {
            break;
        }
        on_batch(pos, &h, size as u64);
        expected_min_offset = h.next_offset();
        pos += size as u64;
    }
    Ok(ScanOutcome { valid_size: pos })
}

/// Reads the whole batch at `pos` (header and records) from a range ending at `end`.
pub(crate) fn read_batch_at(
    file: &File,
    pos: u64,
    end: u64,
) -> io::Result<Option<(BatchHeader, Bytes)>> {
    let Some((h, size)) = read_header_at(file, pos, end)? else {
        return Ok(None);
    };
    let mut buf = vec![0u8; size as usize];
    file.read_exact_at(&mut buf, pos)?;
    Ok(Some((h, Bytes::from(buf))))
}

/// Visits the batch headers of `file` from `start` to `end` (no CRC checks, header reads only).
/// `visit` returns `false` to stop. Errors if a header within the range is malformed, since the
/// range is supposed to hold only whole, validated batches.
pub(crate) fn for_each_header(
    file: &File,
    start: u64,
    end: u64,
    mut visit: impl FnMut(u64, &BatchHeader, u64) -> io::Result<bool>,
) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let Some((h, size)) = read_header_at(file, pos, end)? else {
            return Err(invalid_data(format!(
                "malformed batch header at position {pos}"
            )));
        };
        if !visit(pos, &h, size)? {
            break;
        }
        pos += size;
    }
    Ok(())
}

/// Reads whole batches from `file[start..end]`, beginning with the first whose last offset is
/// `>= offset`, up to `max_bytes` but always at least that one batch. `None` if no batch in the
/// range reaches `offset`.
pub(crate) fn read_batches(
    file: &File,
    start: u64,
    end: u64,
    offset: i64,
    max_bytes: usize,
) -> io::Result<Option<Bytes>> {
    let mut found = None;
    for_each_header(file, start, end, |pos, h, size| {
        if h.last_offset() >= offset {
            found = Some((pos, size));
            return Ok(false);
        }
        Ok(true)
    })?;
    let Some((pos, first_size)) = found else {
        return Ok(None);
    };
    let want = (max_bytes as u64).min(end - pos).max(first_size);
    let mut buf = vec![0u8; want as usize];
    file.read_exact_at(&mut buf, pos)?;
    // Cut to whole batches; the first one is whole by construction.
    let mut used = first_size as usize;
    while used + LOG_OVERHEAD <= buf.len() {
        let mut len = [0u8; 4];
        len.copy_from_slice(&buf[used + 8..used + 12]);
        let size = LOG_OVERHEAD + i32::from_be_bytes(len).max(0) as usize;
        if used + size > buf.len() {
            break;
        }
        used += size;
    }
    buf.truncate(used);
    Ok(Some(Bytes::from(buf)))
}
