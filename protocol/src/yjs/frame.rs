//! y-websocket frames: `varUint(messageType)` then the message's payload,
//! one or more messages to a frame. This module reads a frame whole
//! (`read_frame`) and owns Roost's extension messages, both ways:
//!
//! | type | name | payload | encoder | decoder |
//! |---|---|---|---|---|
//! | 100 | `saved` (server → client) | `varUint(n)` | `saved_frame` | `read_saved` |
//! | 101 | `refresh` (client → server) | `varString(token)` | `refresh_frame` | `refresh_token` |
//! | 102 | `ping` (both ways) | none | `PING_FRAME` | `read_frame` (`YMessage::Ping`) |
//!
//! They lie outside y-protocols' 0–3 and the small numbers other providers
//! extend the protocol with. The standard messages (sync, awareness) are
//! encoded by yrs in the server.
//!
//! Invariant: a frame is used only once `read_frame` read all of it; an
//! empty or truncated frame, an unknown sync type or bytes after the last
//! message is an error, and nothing of the frame is used then.

use super::reader::{write_var_u64, Reader};
use super::YjsError;

/// One message of a y-websocket frame, borrowing the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YMessage<'a> {
    /// Sync step 1: the sender's state vector (unchecked; see
    /// `check_state_vector`).
    SyncStep1(&'a [u8]),
    /// Sync step 2: an update (unchecked; see `check_update`).
    SyncStep2(&'a [u8]),
    /// A sync update (unchecked).
    Update(&'a [u8]),
    /// An awareness update (unchecked; see `check_awareness`).
    Awareness(&'a [u8]),
    /// Auth: `Some(reason)` for permission denied.
    Auth(Option<&'a str>),
    /// Query awareness.
    QueryAwareness,
    /// Roost extension, heartbeat: `[MSG_PING]`, no payload (see `MSG_PING`).
    Ping,
    /// Any other message type with its payload (Roost's 100 and 101 among them).
    Other(u8, &'a [u8]),
}

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_QUERY_AWARENESS: u8 = 3;

/// Roost extension, durable acknowledgement: `[100, varUint(n)]`, the count
/// of sync step-2/update messages this client sent on this connection that
/// are durably stored. Sent only to sockets opened with `saved=1`.
pub const MSG_SAVED: u8 = 100;

/// Roost extension, in-band token refresh: `[101, varString(token)]`.
pub const MSG_REFRESH: u8 = 101;

/// Roost extension, heartbeat: the one-byte frame `[102]`, the same in both
/// directions. Browsers cannot see WebSocket ping frames, so a client that
/// wants to notice a frozen or vanished server sends `[102]` when the socket
/// has been quiet, and the server's socket layer answers `[102]` at once
/// (never through the document, so a busy document does not look dead).
/// 102 follows Roost's `saved` (100) and `refresh` (101), clear of
/// y-protocols' 0–3 and the small numbers other providers extend with.
pub const MSG_PING: u8 = 102;

/// The heartbeat frame, ping and answer alike.
pub const PING_FRAME: [u8; 1] = [MSG_PING];

/// Reads a whole y-websocket frame: one or more messages that end exactly
/// at the frame's end. A truncated message, an unknown sync type or an
/// empty frame is an error (the socket closes with 1008); nothing of the
/// frame is used then.
pub fn read_frame(frame: &[u8]) -> Result<Vec<YMessage<'_>>, YjsError> {
    let mut r = Reader::new(frame);
    if r.is_empty() {
        return Err(YjsError::Truncated("an empty frame"));
    }
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(read_message(&mut r)?);
    }
    Ok(out)
}

fn read_message<'a>(r: &mut Reader<'a>) -> Result<YMessage<'a>, YjsError> {
    Ok(match r.var_u8("a message type")? {
        MSG_SYNC => match r.var_u8("a sync message type")? {
            0 => YMessage::SyncStep1(r.buf("a state vector")?),
            1 => YMessage::SyncStep2(r.buf("an update")?),
            2 => YMessage::Update(r.buf("an update")?),
            _ => return Err(YjsError::Malformed("unknown sync message type")),
        },
        MSG_AWARENESS => YMessage::Awareness(r.buf("an awareness update")?),
        MSG_AUTH => {
            if r.var_u8("an auth message")? == 0 {
                YMessage::Auth(Some(r.string("an auth reason")?))
            } else {
                YMessage::Auth(None)
            }
        }
        MSG_QUERY_AWARENESS => YMessage::QueryAwareness,
        MSG_PING => YMessage::Ping,
        other => YMessage::Other(other, r.buf("a message")?),
    })
}

/// `[100, varUint(n)]`: the first `n` step-2/update messages are durable.
pub fn saved_frame(n: u64) -> Vec<u8> {
    let mut out = vec![MSG_SAVED];
    write_var_u64(&mut out, n);
    out
}

/// Reads a `saved` frame (clients and tests): its count.
pub fn read_saved(frame: &[u8]) -> Result<u64, YjsError> {
    let mut r = Reader::new(frame);
    if r.var_u8("a message type")? != MSG_SAVED {
        return Err(YjsError::Malformed("not a saved message"));
    }
    let n = r.var_u64("a saved count")?;
    r.end()?;
    Ok(n)
}

/// `[101, varString(token)]`: replaces the socket's access token.
pub fn refresh_frame(token: &str) -> Vec<u8> {
    let mut out = vec![MSG_REFRESH];
    write_var_u64(&mut out, token.len() as u64);
    out.extend_from_slice(token.as_bytes());
    out
}

/// Reads the token of a frame whose first message is a `refresh`. Only
/// that message is read: the socket layer dispatches a frame (which
/// `read_frame` accepted whole) by its first message.
pub fn refresh_token(frame: &[u8]) -> Result<&str, YjsError> {
    let mut r = Reader::new(frame);
    if r.var_u8("a message type")? != MSG_REFRESH {
        return Err(YjsError::Malformed("not a refresh message"));
    }
    std::str::from_utf8(r.buf("a token")?).map_err(|_| YjsError::TokenNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_must_end_where_their_last_message_ends() {
        let update = [0, 2, 2, 0, 0];
        assert_eq!(read_frame(&update), Ok(vec![YMessage::Update(&[0, 0])]));
        assert!(read_frame(&[0, 2, 2, 0, 0, 0]).is_err());
        assert!(read_frame(&[0, 2, 5, 0, 0]).is_err());
        assert!(read_frame(&[]).is_err());
        assert_eq!(
            read_frame(&[3, 1, 1, 7]),
            Ok(vec![YMessage::QueryAwareness, YMessage::Awareness(&[7])])
        );
    }

    #[test]
    fn a_ping_is_one_byte_with_no_payload() {
        assert_eq!(read_frame(&PING_FRAME), Ok(vec![YMessage::Ping]));
        assert_eq!(
            read_frame(&[MSG_PING, 3]),
            Ok(vec![YMessage::Ping, YMessage::QueryAwareness])
        );
        // Other Roost and unknown types still carry a varUint8Array payload.
        assert_eq!(
            read_frame(&[101, 1, 7]),
            Ok(vec![YMessage::Other(101, &[7])])
        );
        assert_eq!(read_frame(&[103, 0]), Ok(vec![YMessage::Other(103, &[])]));
        assert!(read_frame(&[103]).is_err());
    }

    #[test]
    fn saved_counts_are_varints() {
        assert_eq!(saved_frame(5), [100, 5]);
        assert_eq!(saved_frame(300), [100, 0xac, 0x02]);
        assert_eq!(read_saved(&saved_frame(u64::MAX)), Ok(u64::MAX));
        assert!(read_saved(&[100, 5, 0]).is_err(), "trailing bytes");
        assert!(read_saved(&[101, 5]).is_err(), "another message");
    }

    #[test]
    fn refresh_carries_a_utf8_token() {
        let frame = refresh_frame("tok");
        assert_eq!(frame, [101, 3, b't', b'o', b'k']);
        assert_eq!(refresh_token(&frame), Ok("tok"));
        assert_eq!(refresh_token(&[101, 1, 0xff]), Err(YjsError::TokenNotUtf8));
        assert!(refresh_token(&[101, 4, b'x']).is_err(), "truncated");
        assert!(refresh_token(&[100, 0]).is_err(), "another message");
    }
}
