//! WebSocket close codes Roost sends (and the two it records but never
//! sends), as listed in PROTOCOL.md ("Close codes"). A close reason holds
//! at most 123 bytes (`MAX_REASON_BYTES`, `clip_reason`).

use crate::ErrorCode;

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The socket stopped answering pings (the server's heartbeat).
pub const GOING_AWAY: u16 = 1001;
/// Recorded, never sent: the client's close frame carried no code.
pub const NO_STATUS: u16 = 1005;
/// Recorded, never sent: the connection ended without a close frame.
pub const ABNORMAL: u16 = 1006;
/// Policy: a bad or refused frame, an expired or refused token, a frame
/// rate over the limit.
pub const POLICY: u16 = 1008;
/// A frame, update or document over its size limit.
pub const TOO_LARGE: u16 = 1009;
/// The object is broken, or could not save a message this socket sent.
pub const OBJECT_BROKEN: u16 = 1011;
/// The server is restarting (shutdown).
pub const RESTARTING: u16 = 1012;
/// Try again later: overloaded, too many sockets, or the client read too
/// slowly and its outbound queue overflowed.
pub const TRY_AGAIN: u16 = 1013;

/// The socket's token is missing, malformed, expired or wrongly signed: the
/// upgrade is accepted and closed at once with this code, because a browser
/// never sees the HTTP status of a refused upgrade (only 1006).
pub const UNAUTHENTICATED: u16 = 4401;
/// The socket's token is valid but does not open this object.
pub const FORBIDDEN: u16 = 4403;

/// The close code for a socket refused for its token, if `code` is an auth
/// error.
pub fn for_auth(code: ErrorCode) -> Option<u16> {
    match code {
        ErrorCode::Unauthorized => Some(UNAUTHENTICATED),
        ErrorCode::Forbidden => Some(FORBIDDEN),
        _ => None,
    }
}

/// The close reason sent when a socket's token expires unrefreshed.
pub const TOKEN_EXPIRED: &str = "token expired";

/// The most bytes a close frame's reason holds.
pub const MAX_REASON_BYTES: usize = 123;

/// The close code for a socket whose object could not take a frame:
/// `TRY_AGAIN` when it is overloaded, else `OBJECT_BROKEN`.
pub fn for_error(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::Overloaded | ErrorCode::ObjectMoved => TRY_AGAIN,
        _ => OBJECT_BROKEN,
    }
}

/// `text` cut to at most `MAX_REASON_BYTES`, at a character boundary.
pub fn clip_reason(text: &str) -> &str {
    let mut end = text.len().min(MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_have_their_own_codes() {
        assert_eq!(for_auth(ErrorCode::Unauthorized), Some(4401));
        assert_eq!(for_auth(ErrorCode::Forbidden), Some(4403));
        assert_eq!(for_auth(ErrorCode::Overloaded), None);
    }

    #[test]
    fn reasons_are_clipped_at_a_char_boundary() {
        assert_eq!(clip_reason("short"), "short");
        let long = "é".repeat(100);
        let clipped = clip_reason(&long);
        assert_eq!(clipped.len(), 122);
        assert!(long.starts_with(clipped));
    }
}
