//! A plain HTTP/1.1 GET of a broker's metrics or health endpoint (hyper's client connection:
//! one request per connection, a deadline, a bounded body).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest body read: a broker with per-partition metrics for many thousands of
/// partitions answers a few MiB.
const MAX_BODY: usize = 32 << 20;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The URL is not `http://HOST:PORT[/...]`.
    #[error("`{0}` is not an http://HOST:PORT address")]
    BadUrl(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection or the exchange failed.
    #[error("{0}")]
    Io(String),
}

/// The `host:port` of an `http://host:port[/...]` URL.
pub fn authority(url: &str) -> Result<&str, GetError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| GetError::BadUrl(url.to_string()))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || !authority.contains(':') {
        return Err(GetError::BadUrl(url.to_string()));
    }
    Ok(authority)
}

/// GETs `path` from the server of `base_url` (`http://host:port`): the status and the body.
pub async fn get(base_url: &str, path: &str, deadline: Duration) -> Result<(u16, Bytes), GetError> {
    let authority = authority(base_url)?.to_string();
    tokio::time::timeout(deadline, exchange(authority, path.to_string()))
        .await
        .map_err(|_| GetError::Timeout(deadline))?
}

async fn exchange(authority: String, path: String) -> Result<(u16, Bytes), GetError> {
    let io_error = |e: &dyn std::fmt::Display| GetError::Io(e.to_string());
    let stream = TcpStream::connect(&authority)
        .await
        .map_err(|e| io_error(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| io_error(&e))?;
    // The connection task ends with the exchange (or with this future, when it times out).
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, &authority)
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| io_error(&e))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| io_error(&e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| io_error(&e))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_http_host_port_urls_are_taken() {
        assert_eq!(
            authority("http://127.0.0.1:9644").unwrap(),
            "127.0.0.1:9644"
        );
        assert_eq!(authority("http://h:1/metrics").unwrap(), "h:1");
        for bad in ["https://h:1", "h:1", "http://", "http://host"] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
