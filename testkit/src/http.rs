//! A minimal HTTP/1.1 client for tests (the dashboard's API, WebDriver): one request per
//! connection (`Connection: close`), bodies with Content-Length or chunked encoding, and a
//! reader for server-sent events. Everything has a deadline, so a hanging server fails the
//! test instead of stalling it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Sends one request to `addr` (`HOST:PORT`) and reads the whole response.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("a connection to the server");
        stream
            .write_all(&request_bytes(addr, method, path, headers, body))
            .await
            .expect("the request is written");
        // Read until the body is complete: some servers (chromedriver) keep the connection
        // open despite `Connection: close`.
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if complete(&raw) {
                break;
            }
            let n = stream.read(&mut buf).await.expect("the response is read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        parse(&raw)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} did not answer in time"))
}

/// GET with optional headers.
pub async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, None).await
}

/// POST of a JSON body.
pub async fn post_json(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, Some(body.to_string().as_bytes())).await
}

/// Whether `raw` holds a whole response (headers and the body they announce).
fn complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= length;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    // No length: the body ends when the server closes the connection.
    false
}

fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
}

/// Opens a server-sent event stream and returns the `data` of the first `count` events
/// named `event`, with the response status.
pub async fn sse_events(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    event: &str,
    count: usize,
) -> (u16, Vec<String>) {
    let read = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("a connection to the server");
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        stream
            .write_all(&request_bytes(addr, "GET", path, &all, None))
            .await
            .expect("the request is written");
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.expect("the response is read");
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            let status: u16 = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if n == 0 || (status != 0 && status != 200) {
                return (status, Vec::new());
            }
            // Chunk framing may split data lines; events are found on the joined text of
            // the chunks, which contain whole lines in practice for axum's SSE writer.
            // The piece after the last blank line may be an event still arriving.
            let mut blocks: Vec<&str> = text.split("\n\n").collect();
            blocks.pop();
            let found: Vec<String> = blocks
                .into_iter()
                .filter(|block| block.lines().any(|l| l == format!("event: {event}")))
                .filter_map(|block| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
                })
                .collect();
            if found.len() >= count {
                return (status, found.into_iter().take(count).collect());
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("no {count} {event} events from {path} in time"))
}
