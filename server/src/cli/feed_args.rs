//! `roost serve`'s change-feed and webhook flags (each also a `ROOST_*`
//! variable), flattened into `ServeArgs`.

use std::time::Duration;

use crate::config::parse_duration;
use crate::feed::webhook::WebhookConfig;
use crate::feed::FeedConfig;

/// The change feed's and the webhook's flags.
#[derive(clap::Args, Debug)]
pub struct FeedArgs {
    /// Classes whose committed changes go to the change feed (`GET
    /// /v1/feed`, webhooks), comma-separated, or `*` for all; e.g.
    /// `ydoc,room`. Off when empty (the default) unless --webhook is set.
    #[arg(long = "feed", env = "ROOST_FEED", value_delimiter = ',')]
    pub feed: Vec<String>,
    /// How long the feed index keeps events (e.g. 7d).
    #[arg(long, env = "ROOST_FEED_RETENTION", default_value = "7d", value_parser = above_zero)]
    pub feed_retention: Duration,
    /// Newest feed events each object keeps in its own file (besides any
    /// the feed index has not taken yet): the window indexed again after a
    /// kill -9.
    #[arg(long, env = "ROOST_FEED_OBJECT_ROWS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(64..))]
    pub feed_object_rows: u64,
    /// Deliver feed events by HTTP POST to this `http://` URL (signed,
    /// retried; see PROTOCOL.md "Webhooks").
    #[arg(long, env = "ROOST_WEBHOOK")]
    pub webhook: Option<String>,
    /// The HMAC-SHA256 key of the webhook's `X-Roost-Signature` header
    /// (required with --webhook).
    #[arg(long, env = "ROOST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Only deliver events of these classes, comma-separated (default: all
    /// the feed's classes; with no --feed, these become the feed's).
    #[arg(long, env = "ROOST_WEBHOOK_CLASS", value_delimiter = ',')]
    pub webhook_class: Vec<String>,
    /// Most events in one webhook POST.
    #[arg(long, env = "ROOST_WEBHOOK_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub webhook_batch: u32,
    /// How long one webhook POST may take before it is retried.
    #[arg(long, env = "ROOST_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = above_zero)]
    pub webhook_timeout: Duration,
    /// The longest wait between two attempts of a failing delivery (the
    /// backoff doubles from 100 ms up to it).
    #[arg(long, env = "ROOST_WEBHOOK_MAX_BACKOFF", default_value = "60s", value_parser = parse_duration)]
    pub webhook_max_backoff: Duration,
}

/// A duration that must be above zero: a zero retention drops every event
/// at once, a zero webhook timeout fails every delivery.
fn above_zero(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("`{text}` must be above zero"));
    }
    Ok(d)
}

impl FeedArgs {
    /// The feed's configuration these flags set.
    pub fn config(&self) -> FeedConfig {
        let clean = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        };
        let mut classes = clean(&self.feed);
        let webhook_classes = clean(&self.webhook_class);
        let webhook = self.webhook.as_ref().map(|url| WebhookConfig {
            url: url.clone(),
            secret: self.webhook_secret.clone().unwrap_or_default(),
            classes: webhook_classes.clone(),
            batch: self.webhook_batch,
            timeout: self.webhook_timeout,
            max_backoff: self.webhook_max_backoff,
        });
        if webhook.is_some() && classes.is_empty() {
            classes = if webhook_classes.is_empty() {
                vec!["*".to_owned()]
            } else {
                webhook_classes
            };
        }
        FeedConfig {
            classes,
            retention: self.feed_retention,
            object_rows: self.feed_object_rows,
            webhook,
        }
    }
}
