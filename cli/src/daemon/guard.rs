//! What a request must look like before any route sees it, on every listener: no foreign
//! `Origin` (a web page the user opened must not drive the fleet), a `Host` naming the address
//! being served on TCP (DNS rebinding cannot read the log), and JSON bodies on writes (a
//! cross-origin "simple" `text/plain` POST is refused even where `Origin` is absent).

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;

/// The listener a request came in on, and the port a TCP listener serves.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    /// `None` for the Unix socket, which no browser can reach by name.
    pub tcp: Option<std::net::SocketAddr>,
}

impl Served {
    /// Host names (with the served port, or without any) this listener answers to.
    fn host_is_ours(&self, host: &str) -> bool {
        let Some(address) = self.tcp else {
            return true;
        };
        if address.ip().is_unspecified() {
            // Served on every interface (which needs a token): any name may reach it, and a
            // page cannot supply the token, so the token is the guard here.
            return true;
        }
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
                match port.parse::<u16>() {
                    Ok(port) => (name, Some(port)),
                    Err(_) => (host, None),
                }
            }
            _ => (host, None),
        };
        if port.is_some_and(|port| port != address.port()) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let ours = address.ip().to_string();
        name.eq_ignore_ascii_case("localhost")
            || name == "127.0.0.1"
            || name == "::1"
            || name == ours
    }

    /// `Origin` values a browser would send for a page served from this very address.
    fn origin_is_ours(&self, origin: &str) -> bool {
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        self.tcp.is_some() && self.host_is_ours(rest)
    }
}

pub(crate) async fn check(State(served): State<Served>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !served.origin_is_ours(origin) {
            return forbidden(
                "foreign_origin",
                format!(
                    "requests from web pages ({origin}) are refused: fleetlog is driven by agents, not browsers"
                ),
                json!({ "origin": origin }),
            );
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    if !served.host_is_ours(host) {
        return forbidden(
            "foreign_host",
            format!(
                "Host {host:?} is not the address this daemon serves; use 127.0.0.1 or localhost"
            ),
            json!({ "host": host }),
        );
    }
    if request.method() == Method::POST && carries_a_body(&request) && !is_json(&request) {
        let given = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none");
        return ApiError {
            details: json!({ "content_type": given }),
            ..ApiError::new(
                415,
                "unsupported_media_type",
                format!("writes take JSON: send Content-Type: application/json (got {given})"),
            )
        }
        .into_response();
    }
    next.run(request).await
}

fn carries_a_body(request: &Request) -> bool {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match length {
        Some(length) => length > 0,
        None => request.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn forbidden(code: &'static str, message: String, details: serde_json::Value) -> Response {
    ApiError {
        details,
        ..ApiError::new(403, code, message)
    }
    .into_response()
}
