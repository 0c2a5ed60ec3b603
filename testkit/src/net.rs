//! Ports.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The ports handed out: below Linux's ephemeral range (32768-60999 by default), so that no
/// outgoing connection of any process can take a port between the moment a test picks it and
/// the moment a broker binds it (a port bound with `:0` and released could be, and was: a
/// broker then failed with "address already in use").
const LOW: u32 = 20_000;
const SPAN: u32 = 12_768; // up to 32767

/// How many ports this process has handed out: consecutive calls never return the same port
/// (the stride below is coprime with [`SPAN`]), even before the first one is bound.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// A port on 127.0.0.1 that nobody listens on right now, outside the ephemeral range, and not
/// handed out before by this process (within 12,768 calls).
pub fn free_port() -> u16 {
    // Each process starts at its own point, so test binaries running side by side spread out.
    static SEED: OnceLock<u32> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(2_654_435_761) ^ nanos
    });
    for _ in 0..SPAN {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let offset = (u64::from(seed) + u64::from(n) * 7_919) % u64::from(SPAN);
        let Ok(port) = u16::try_from(u64::from(LOW) + offset) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| (20_000..32_768).contains(p)));
    }
}
