//! Webhook delivery (`--webhook URL`): the feed's events, oldest first, in
//! POSTs of up to `--webhook-batch` events, body `{"events": [...]}`,
//! signed with `X-Roost-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! The position is the cursor `webhook` in the feed index, moved past a
//! batch only once the receiver answered 2xx; any other answer, a timeout
//! or a refused connection retries after a backoff that doubles from
//! 100 ms up to `--webhook-max-backoff`, with half as many events (down to
//! one; doubled back after each success), so a receiver too slow for a
//! whole batch still makes progress. A restart or a kill -9
//! resumes from the stored cursor: every event is delivered at least once,
//! per object in commit order (a batch acknowledged just before a kill -9
//! whose cursor write was lost is delivered again) — unless the receiver
//! stays away longer than `--feed-retention`: the index then drops events
//! it never acknowledged, which is logged as an error (the index does not
//! grow without bound behind a stuck receiver).
//!
//! Plain `http://` only (no TLS client is built in): point it at a relay on
//! the same host or network for `https://`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

use super::{index, Feed, FeedEvent};

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host[:port]/path`.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Roost-Signature`.
    pub secret: String,
    /// Only events of these classes (empty: every fed class).
    pub classes: Vec<String>,
    /// Most events per POST.
    pub batch: u32,
    /// How long one POST may take.
    pub timeout: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

/// The signature header's value for `body`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("invariant: HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks the URL: an absolute `http://` one.
pub(crate) fn check_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("--webhook {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "--webhook {url:?}: only http://host[:port]/path is supported (use a local relay for https)"
        ));
    }
    Ok(uri)
}

const CURSOR: &str = "webhook";

/// Starts delivering; runs until the process ends.
pub(crate) fn start(
    feed: Feed,
    config: WebhookConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let uri = check_url(&config.url).map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        !config.secret.is_empty(),
        "--webhook needs --webhook-secret (the HMAC key receivers check the signature with)"
    );
    // A class the feed does not carry never has an event: the webhook would
    // wait forever, silently.
    if let Some(c) = config
        .classes
        .iter()
        .find(|c| *c != "*" && !feed.config().feeds(c))
    {
        anyhow::bail!(
            "--webhook-class {c}: not a class of --feed ({}), so it would never be delivered",
            feed.config().classes.join(",")
        );
    }
    Ok(tokio::spawn(deliver(feed, config, uri)))
}

async fn deliver(feed: Feed, config: WebhookConfig, uri: hyper::Uri) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let first_backoff = Duration::from_millis(100);
    let mut backoff = first_backoff;
    // Halved after each failed attempt, doubled back after each success: a
    // receiver too slow for a whole batch within --webhook-timeout still
    // gets smaller ones through, instead of the same batch forever.
    let mut batch_now = config.batch.max(1);
    loop {
        let classes = config.classes.clone();
        let batch = batch_now;
        let counts = feed.clone();
        let next = feed
            .read(move |c| {
                let mut cursor = index::cursor(c, CURSOR)?;
                // Retention dropped events the receiver never acknowledged
                // (it was down longer than --feed-retention): say so once,
                // loudly, and go on after them.
                if let Some(dropped) = index::dropped_after(c, cursor, &classes)? {
                    counts.metrics().webhook_gaps.fetch_add(1, Relaxed);
                    tracing::error!(
                        after = cursor,
                        up_to = dropped,
                        "webhook: events were dropped by --feed-retention before delivery"
                    );
                    index::set_cursor(c, CURSOR, dropped)?;
                    cursor = dropped;
                }
                let newest = index::newest(c)?;
                Ok((index::read(c, cursor, &classes, batch)?, newest))
            })
            .await;
        let (events, newest) = match next {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot read the feed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        feed.metrics().webhook_cursor.store(
            events.first().map_or(newest, |e| e.seq.saturating_sub(1)),
            Relaxed,
        );
        let Some(last) = events.last().map(|e| e.seq) else {
            feed.wait_above(newest, Duration::from_secs(5)).await;
            continue;
        };
        match post(&client, &uri, &config, &events).await {
            Ok(()) => {
                backoff = first_backoff;
                batch_now = batch_now.saturating_mul(2).min(config.batch.max(1));
                let m = feed.metrics();
                m.webhook_delivered.fetch_add(events.len() as u64, Relaxed);
                m.webhook_cursor.store(last, Relaxed);
                let stored = feed.read(move |c| index::set_cursor(c, CURSOR, last)).await;
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "webhook: cannot store the cursor");
                }
            }
            Err(why) => {
                feed.metrics().webhook_failures.fetch_add(1, Relaxed);
                batch_now = (batch_now / 2).max(1);
                tracing::warn!(error = %why, events = events.len(), retry_in_ms = backoff.as_millis() as u64, "webhook: delivery failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff.max(first_backoff));
            }
        }
    }
}

async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: &hyper::Uri,
    config: &WebhookConfig,
    events: &[FeedEvent],
) -> Result<(), String> {
    let body =
        serde_json::to_vec(&serde_json::json!({ "events": events })).map_err(|e| e.to_string())?;
    let request = hyper::Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("x-roost-signature", signature(&config.secret, &body))
        .header("x-roost-events", events.len().to_string())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(config.timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer within {:?}", config.timeout))?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256_in_hex() {
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://example.org/hook").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url("/relative").is_err());
    }
}
