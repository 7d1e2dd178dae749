//! The text checks of a trace run: every reader's text rebuilt from what
//! it received against the text of what was sent (`Replay::expected_text`),
//! and `--verify`, which reads each document back from the server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use yrs::updates::decoder::Decode as _;
use yrs::{Doc, GetString as _, Transact as _, Update};

use super::client::Outcome;
use super::replay::Replay;
use super::run::fail_on_mismatch;
use super::TraceArgs;
use crate::args::Common;
use crate::report::{Report, Unit};
use crate::target::Target;
use crate::ws::{Kind, WsConn};
use crate::yjs::{self, Framer, Incoming, TEXT_NAME};
use crate::ysweet;

/// Rebuilds the text of every reader that received everything its
/// document's writers sent and compares it with the text of what they
/// sent; returns (mismatches, readers left out because they missed
/// updates: the delivery ratio already counts those).
pub(super) fn check_texts(
    replay: &Replay,
    sent: &[Vec<usize>],
    outcomes: &[(usize, bool, Outcome)],
) -> anyhow::Result<(usize, usize)> {
    let mut expected: HashMap<&[usize], String> = HashMap::new();
    let (mut mismatches, mut incomplete) = (0, 0);
    for (doc, reader, o) in outcomes {
        if !reader || !o.connected {
            continue;
        }
        if o.delivered < sent[*doc].iter().sum::<usize>() as u64 {
            incomplete += 1;
            continue;
        }
        let want = match expected.get(sent[*doc].as_slice()) {
            Some(w) => w,
            None => {
                let w = replay.expected_text(&sent[*doc])?;
                expected.entry(sent[*doc].as_slice()).or_insert(w)
            }
        };
        if text_of(&o.received)? != *want {
            mismatches += 1;
        }
    }
    Ok((mismatches, incomplete))
}

/// The text of a document built from `updates`, in order.
fn text_of(updates: &[Vec<u8>]) -> anyhow::Result<String> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(TEXT_NAME);
    {
        let mut txn = doc.transact_mut();
        for u in updates {
            txn.apply_update(Update::decode_v1(u).context("a received update does not decode")?)?;
        }
    }
    let s = text.get_string(&doc.transact());
    Ok(s)
}

/// The target, the documents `{prefix}-{d}` and their socket paths (for
/// y-sweet after its token handshake, creating them if `create`).
pub(super) async fn documents(
    args: &TraceArgs,
    common: &Common,
    prefix: &str,
    create: bool,
) -> anyhow::Result<(Target, Vec<String>, Vec<String>)> {
    let target = Target::parse(&args.url, common.allow_remote)?;
    let names: Vec<String> = (0..args.docs).map(|d| format!("{prefix}-{d}")).collect();
    let paths = ysweet::doc_paths(
        args.protocol,
        &target,
        &names,
        &args.connect.token,
        create,
        common.allow_remote,
    )
    .await?;
    Ok((target, names, paths))
}

/// `--verify`: reads each document back and compares its text with the
/// whole (or `--keystrokes`) trace's.
pub(super) async fn verify(
    args: &TraceArgs,
    common: &Common,
    replay: &Replay,
    prefix: &str,
) -> anyhow::Result<Report> {
    let (target, names, paths) = documents(args, common, prefix, false).await?;
    let want = replay.expected_text(&replay.agents.iter().map(Vec::len).collect::<Vec<_>>())?;
    let mut mismatches = 0;
    let t0 = Instant::now();
    for (name, path) in names.iter().zip(&paths) {
        let got = tokio::time::timeout(
            args.connect.connect_timeout,
            read_back(args, &target, name, path),
        )
        .await
        .with_context(|| {
            format!(
                "reading {name} back took over {:?}",
                args.connect.connect_timeout
            )
        })??;
        if got != want {
            mismatches += 1;
            eprintln!("{name}: {} characters, expected {}", got.len(), want.len());
        }
    }
    let mut rep = Report::new("trace-verify");
    rep.label = common.label.clone();
    rep.param("protocol", args.protocol.name())
        .param("docs", args.docs);
    rep.add("docs_checked", args.docs as f64, Unit::Count)
        .add("text_chars", want.len() as f64, Unit::Count)
        .add("read_back_s", t0.elapsed().as_secs_f64(), Unit::Seconds)
        .add("text_mismatches", mismatches as f64, Unit::Count);
    fail_on_mismatch(&rep)?;
    Ok(rep)
}

/// One fresh client's view of a document: its text after the server's step 2.
async fn read_back(
    args: &TraceArgs,
    target: &Target,
    name: &str,
    path: &str,
) -> anyhow::Result<String> {
    let mut conn = WsConn::connect(target, path, &[]).await?;
    let mut framer = Framer::new(args.protocol, name);
    if let Some(auth) = framer.auth(&args.connect.token) {
        conn.send_binary(auth).await?;
    }
    conn.send_binary(framer.step1(&yrs::StateVector::default()))
        .await?;
    loop {
        let Some(msg) = conn.next_message().await? else {
            anyhow::bail!("{name}: the server closed the connection before its step 2");
        };
        if msg.kind != Kind::Binary {
            continue;
        }
        if let Incoming::Step2(u) = yjs::classify(args.protocol, msg.payload)? {
            let text = text_of(&[u.to_vec()])?;
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
            return Ok(text);
        }
    }
}
