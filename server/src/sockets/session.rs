//! What a socket's loop learns from the frames it reads, whatever the
//! protocol: the frame-rate bucket, the token's expiry (and the timer that
//! closes the socket when it passes) and in-band token refresh.

use std::pin::Pin;
use std::time::Duration;

use roost_protocol::ErrorDetail;
use tokio::time::Sleep;

use super::conn::Conn;

/// The frame-rate bucket (`rate` frames per second, bursts of `rate`; the
/// rate is the server's, passed in, so that idle sockets keep no copy) and
/// the token's expiry.
pub(super) struct Session {
    /// When the bucket was last refilled.
    last: tokio::time::Instant,
    tokens: f32,
    /// Set when a token refresh changed `expires`.
    pub(super) expiry_changed: bool,
    /// When the socket's token expires (ms since the epoch); `NO_EXPIRY` if
    /// it has none.
    expires: i64,
}

const NO_EXPIRY: i64 = i64::MAX;

impl Session {
    pub(super) fn new(rate: u32, expires: Option<i64>) -> Session {
        Session {
            last: tokio::time::Instant::now(),
            tokens: rate.max(1) as f32,
            expiry_changed: false,
            expires: expires.unwrap_or(NO_EXPIRY),
        }
    }

    pub(super) fn expires(&self) -> Option<i64> {
        (self.expires != NO_EXPIRY).then_some(self.expires)
    }

    fn set_expires(&mut self, expires: Option<i64>) {
        let expires = expires.unwrap_or(NO_EXPIRY);
        self.expiry_changed |= expires != self.expires;
        self.expires = expires;
    }

    /// Takes a token for one frame; false if the socket is over its rate.
    pub(super) fn take_token(&mut self, rate: u32) -> bool {
        let rate = f64::from(rate.max(1));
        let now = tokio::time::Instant::now();
        let tokens = f64::from(self.tokens) + now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = tokens.min(rate) as f32;
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Checks a refreshed token (it must open the same object, for the same
    /// holder: the same `sub`); on success it becomes the socket's token —
    /// its permission, its identity (so revoking its `jti` closes the
    /// socket) and its expiry — and the new expiry is returned.
    pub(super) fn refresh(&mut self, conn: &Conn, token: &str) -> Result<Option<i64>, ErrorDetail> {
        let key = conn.table.key();
        let access = conn.runtime.0.config.auth.check(Some(token), key)?;
        let sub = |i: Option<&crate::auth::Identity>| i.and_then(|i| i.sub.clone());
        let refused = conn.table.with_table(|t| {
            let e = t.get_mut(&conn.socket)?;
            if sub(e.identity().map(|i| &**i)) != sub(access.identity.as_deref()) {
                return Some(ErrorDetail {
                    code: roost_protocol::ErrorCode::Forbidden,
                    message: "the token is for another holder (`sub`) than the socket's".into(),
                });
            }
            e.read_only = access.read_only;
            if access.identity.is_some() {
                e.set_holder(&access);
            }
            None
        });
        if let Some(refused) = refused {
            return Err(refused);
        }
        self.set_expires(access.expires_ms);
        Ok(access.expires_ms)
    }
}

/// A timer for a token expiry (boxed: most sockets have none).
pub(super) fn expiry_timer(expires: Option<i64>) -> Option<Pin<Box<Sleep>>> {
    expires.map(|ms| {
        let left = ms - crate::catalog::now_ms();
        Box::pin(tokio::time::sleep(
            Duration::from_millis(left.max(0) as u64),
        ))
    })
}

/// Resolves when the timer (if any) fires.
pub(super) fn expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match timer {
        Some(t) => std::future::Future::poll(t.as_mut(), cx),
        None => std::task::Poll::Pending,
    })
}
