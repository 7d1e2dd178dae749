//! [`ApiError`]: the one error type of the HTTP edge. It carries the wire
//! error detail and picks the status code; it is logged once, here (inside
//! the request's span, so with its request id). A server error's message
//! reaches the client without filesystem paths: the log has the full one.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use roost_protocol::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(Debug)]
pub(crate) struct ApiError(pub ErrorDetail);

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorDetail {
            code,
            message: message.into(),
        })
    }
}

impl From<ErrorDetail> for ApiError {
    fn from(d: ErrorDetail) -> Self {
        ApiError(d)
    }
}

/// The status an error is answered with (`ErrorCode::http_status`).
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Whether a word of an error message is a filesystem path: absolute, `./`,
/// `../` or `~/`-relative, or with two separators or more (one alone, as in
/// "I/O", is not).
fn is_path(word: &str) -> bool {
    ["/", "./", "../", "~/"].iter().any(|p| word.starts_with(p))
        || word.contains('\\')
        || word.matches('/').count() >= 2
}

/// `message` with each path replaced by `<path>` (words are split at
/// whitespace; quotes and punctuation around a path are kept).
pub(crate) fn without_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let space = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(space);
        let inner_start = word
            .find(|c: char| !"'\"`(<[{".contains(c))
            .unwrap_or(word.len());
        let inner_end = word
            .rfind(|c: char| !"'\"`)>]},;:.!?".contains(c))
            .map_or(inner_start, |i| i + 1)
            .max(inner_start);
        if is_path(&word[inner_start..inner_end]) {
            out.push_str(&word[..inner_start]);
            out.push_str("<path>");
            out.push_str(&word[inner_end..]);
        } else {
            out.push_str(word);
        }
        let blank = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        out.push_str(&after[..blank]);
        rest = &after[blank..];
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let status = status_of(self.0.code);
        if status.is_server_error() {
            tracing::warn!(code = self.0.code.as_str(), message = %self.0.message, "request failed");
            self.0.message = without_paths(&self.0.message);
        } else {
            tracing::debug!(code = self.0.code.as_str(), message = %self.0.message, "request refused");
        }
        (status, Json(ErrorBody { error: self.0 })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_out_of_messages() {
        assert_eq!(
            without_paths("cannot delete /srv/roost/objects/counter/ab/ab12.sqlite: Is a directory (os error 21)"),
            "cannot delete <path>: Is a directory (os error 21)"
        );
        assert_eq!(
            without_paths("i/o: cannot open `./roost-data/log/3.log`, or data/objects/x"),
            "i/o: cannot open `<path>`, or <path>"
        );
        assert_eq!(
            without_paths("the handler panicked"),
            "the handler panicked"
        );
        assert_eq!(without_paths("I/O error  twice\n"), "I/O error  twice\n");
    }

    #[tokio::test]
    async fn server_errors_reach_the_client_without_paths() {
        let e = ApiError::new(
            ErrorCode::Storage,
            "cannot delete /tmp/x/objects/c/ab/ab.sqlite: denied",
        );
        let body = axum::body::to_bytes(e.into_response().into_body(), 1 << 16)
            .await
            .expect("the body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("the body");
        assert_eq!(body["error"]["message"], "cannot delete <path>: denied");
        // Client errors are the client's own words: left as they are.
        let e = ApiError::new(ErrorCode::BadRequest, "no such file /a/b");
        let body = axum::body::to_bytes(e.into_response().into_body(), 1 << 16)
            .await
            .expect("the body");
        assert!(String::from_utf8_lossy(&body).contains("/a/b"));
    }
}
