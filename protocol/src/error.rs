//! Errors on the wire: the stable codes (`ErrorCode`), the HTTP status of
//! each, and the JSON error body every HTTP route uses,
//! `{"error":{"code":"...","message":"..."}}` (`ErrorBody`; WebSocket
//! `result` frames and `error` events carry its inner `ErrorDetail`).

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. The string form (`as_str`) and the HTTP
/// status of each (`http_status`) are stable and part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or arguments could not be parsed.
    BadRequest,
    /// The class or object name is not valid.
    BadName,
    /// No class with that name is registered.
    UnknownClass,
    /// The class has no such method.
    UnknownMethod,
    /// A size limit (body, key, value, database, frame) was exceeded.
    TooLarge,
    /// The object's mailbox is full; retry later.
    Overloaded,
    /// The object failed to commit or its constructor failed; it restarts from storage.
    ObjectBroken,
    /// The object's handler returned an application error.
    Application,
    /// Storage was asked for something invalid (for example a write while read-only).
    Storage,
    /// The server is shutting down.
    ShuttingDown,
    /// Authentication is missing or invalid.
    Unauthorized,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// Route or resource does not exist.
    NotFound,
    /// The route exists but not with this HTTP method (405).
    MethodNotAllowed,
    /// Too many connections or requests from this client.
    RateLimited,
    /// The request ran past its time budget and was stopped (the admin SQL console).
    TimedOut,
    /// The disk is full: the object cannot store its writes yet (507).
    InsufficientStorage,
    /// Cluster mode: the object is moving between nodes, or its owner is
    /// unreachable for now (503; retry).
    ObjectMoved,
    /// A change-feed cursor points before the events retention kept: some
    /// events after it were dropped unread (410).
    CursorExpired,
    /// Anything else: a bug in the server.
    Internal,
}

impl ErrorCode {
    /// The stable string form, as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadName => "bad_name",
            ErrorCode::UnknownClass => "unknown_class",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ObjectBroken => "object_broken",
            ErrorCode::Application => "application",
            ErrorCode::Storage => "storage",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TimedOut => "timed_out",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ObjectMoved => "object_moved",
            ErrorCode::CursorExpired => "cursor_expired",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// The HTTP status an error with this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadName => 400,
            ErrorCode::UnknownClass | ErrorCode::UnknownMethod | ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::Overloaded | ErrorCode::ShuttingDown | ErrorCode::ObjectMoved => 503,
            ErrorCode::Application => 422,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::TimedOut => 504,
            ErrorCode::InsufficientStorage => 507,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::CursorExpired => 410,
            ErrorCode::ObjectBroken | ErrorCode::Storage | ErrorCode::Internal => 500,
        }
    }

    /// The code of an error response an object's own `fetch` handler
    /// answers with a bare HTTP status: `bad_request` (400), `forbidden`
    /// (403), `not_found` (404), `too_large` (413), else `application`.
    pub fn for_object_status(status: u16) -> ErrorCode {
        match status {
            400 => ErrorCode::BadRequest,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            413 => ErrorCode::TooLarge,
            _ => ErrorCode::Application,
        }
    }
}

/// `{"code": ..., "message": ...}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

/// `{"error": {"code": ..., "message": ...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error's code and message.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// The body of an error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }

    /// The JSON text of the body.
    pub fn encode(&self) -> String {
        // Serializing this plain data type cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shape_is_stable() {
        let body = ErrorBody::new(ErrorCode::UnknownMethod, "no method `x`");
        let text = serde_json::to_string(&body).expect("serializes");
        assert_eq!(
            text,
            r#"{"error":{"code":"unknown_method","message":"no method `x`"}}"#
        );
        assert_eq!(body.encode(), text);
        let back: ErrorBody = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, body);
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Overloaded,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_value(code).expect("serializes");
            assert_eq!(json.as_str(), Some(code.as_str()));
        }
    }
}
