//! Property test over the request path: no frame a client can send panics the broker.
//!
//! Two generators: raw random frames, and frames with a valid header for every supported API
//! and version followed by random or truncated bodies (which reach the decoders and handlers).
//! Run longer with `PROPTEST_CASES=100000 cargo test -p millrace-broker --test request_path_proptest`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use millrace_broker::api::{self, SUPPORTED_APIS};
use millrace_broker::security::Session;
use millrace_broker::{Broker, BrokerConfig};
use proptest::prelude::*;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    session: Arc<Session>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let broker = runtime.block_on(Broker::open(config, None)).unwrap();
        Fixture {
            runtime,
            broker,
            session: Arc::new(Session::plaintext(
                "PLAINTEXT",
                "127.0.0.1:50000".parse().unwrap(),
            )),
            _dir: dir,
        }
    })
}

/// Handles a frame and, for deferred replies, waits for them (bounded: fetches may long-poll).
fn exercise(frame: Bytes) {
    let f = fixture();
    f.runtime.block_on(async {
        if let Ok(api::Reply::Later(pending)) = api::handle(&f.broker, frame, &f.session).await {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), pending).await;
        }
    });
}

fn header(api_key: i16, version: i16, flexible: bool) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(42);
    buf.put_i16(4);
    buf.put_slice(b"fuzz");
    if flexible {
        buf.put_u8(0); // no tagged fields
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(Bytes::from(frame));
    }

    #[test]
    fn random_bodies_behind_valid_headers_never_panic(
        api_index in 0..SUPPORTED_APIS.len(),
        version_pick in any::<u16>(),
        flexible in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (key, min, max) = SUPPORTED_APIS[api_index];
        let span = (max - min + 1) as u16;
        let version = min + (version_pick % span) as i16;
        let mut frame = header(key as i16, version, flexible);
        frame.put_slice(&body);
        exercise(frame.freeze());
    }
}
