//! [`ApiError`]: the one error type of the HTTP edge. It carries the wire
//! error detail and picks the status code; it is logged once, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use roost_protocol::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(Debug)]
pub struct ApiError(pub ErrorDetail);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::BadName => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownClass | ErrorCode::UnknownMethod | ErrorCode::NotFound => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Overloaded | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Application => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::ObjectBroken | ErrorCode::Storage | ErrorCode::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.code);
        if status.is_server_error() {
            tracing::warn!(code = self.0.code.as_str(), message = %self.0.message, "request failed");
        } else {
            tracing::debug!(code = self.0.code.as_str(), message = %self.0.message, "request refused");
        }
        (status, Json(ErrorBody { error: self.0 })).into_response()
    }
}
