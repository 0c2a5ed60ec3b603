//! The single-page UI, compiled into the binary: no files to install, nothing downloaded
//! at run time.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// `(path under /assets/, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
    (
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "vendor/uplot/LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/LICENSE"),
    ),
];

const INDEX: &str = include_str!("../assets/index.html");

/// `GET /`: the page shell; routing inside the app uses the URL fragment (`#/topics/x`).
pub(crate) async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /favicon.ico`: the icon, for clients that ask there instead of following the page's
/// `<link rel="icon">` (an SVG under the conventional name; browsers sniff the type).
pub(crate) async fn favicon() -> Response {
    asset(Path("favicon.svg".to_string())).await
}

/// `GET /assets/{*path}`.
pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, bytes)) => (
            [(CONTENT_TYPE, *content_type), (CACHE_CONTROL, "no-cache")],
            *bytes,
        )
            .into_response(),
        None => ApiError::not_found(format!("no asset {path}")).into_response(),
    }
}
