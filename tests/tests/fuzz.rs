//! Fuzzing on stable Rust, in the suite: structured generators
//! (`roost_tests::fuzzgen`) and their byte-level mutants, driven against
//! the real decoders in-process — y-websocket frames, Yjs updates (checked,
//! decoded and applied by yrs as the server does), awareness, the JSON
//! envelope, commit-log segments and changesets — and, for a bounded
//! budget, against the running binary.
//!
//! A crash is a panic (a failed case) or an abort (a stack overflow ends
//! the test process). Each target prints how many inputs it ran. The suite
//! runs a few seconds per target; the big run:
//!
//! `FUZZ_CASES=70000 FUZZ_BINARY_CASES=1500 cargo test -p roost-tests --test fuzz -- --nocapture`
//! (each target prints `fuzz target <name>: <n> inputs, 0 crashes`; run the
//! targets you want with name filters, e.g. `-- awareness json_envelope`).

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use roost::testing::{decode_segment, Record, Tail, SEGMENT_MAGIC};
use roost_protocol::yjs::{self as wire, UpdateLimits};
use roost_protocol::{ClientFrame, ServerFrame};
use roost_tests::fuzzgen::{self, mutate, Rng, Tally};
use roost_tests::yclient::YClient;
use roost_tests::{http, metric, ServerProcess};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

static UPDATES: Tally = Tally::new("yjs-updates");
static HONEST: Tally = Tally::new("honest-updates");
static FRAMES: Tally = Tally::new("y-websocket-frames");
static AWARENESS: Tally = Tally::new("awareness");
static ENVELOPE: Tally = Tally::new("json-envelope");
static RECORDS: Tally = Tally::new("commit-log-records");
static SEQUENCES: Tally = Tally::new("update-sequences");

/// A document for updates to land in, with items of clients 1 and 2 that
/// generated ids can point at (a text, a map, nested types).
fn base_state() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        use fuzzgen::Op;
        let a = fuzzgen::honest_updates(
            &[
                Op::TextInsert(0, "hello".into()),
                Op::NestedMap("n".into(), "k".into(), yrs::Any::Bool(true)),
                Op::NestedArrayText("x".into()),
                Op::Xml("p".into(), "v".into()),
            ],
            1,
        )
        .1;
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&a).expect("base decodes"))
            .expect("base applies");
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        state
    })
}

fn doc_from(state: &[u8]) -> Doc {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(state).expect("state decodes"))
        .expect("state applies");
    doc
}

/// What the server does with one update's bytes, in-process: check, then
/// decode, then apply to a copy of the base document. Checked bytes must
/// decode without overflowing (an overflow aborts the process), applying
/// must not panic, and an update without parents by id applied to a
/// document without pending structs must apply (the server's deferred,
/// batched apply relies on it). Returns whether it was accepted.
fn exercise_update(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let Ok(shape) = wire::check_update(bytes, &UpdateLimits::default()) else {
        return Ok(false);
    };
    let Ok(update) = Update::decode_v1(bytes) else {
        return Ok(false);
    };
    let doc = doc_from(base_state());
    if leaves_a_gap(&doc, &shape) {
        return Ok(false);
    }
    let pending = doc.transact().store().pending_update().is_some();
    let applied =
        std::panic::catch_unwind(AssertUnwindSafe(|| doc.transact_mut().apply_update(update)));
    match applied {
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "yrs panicked applying a checked update: {bytes:?}"
            )))
        }
        Ok(Err(e)) => {
            prop_assert!(
                shape.parent_by_id || pending,
                "an update without parents by id failed to apply ({e}): {bytes:?}"
            );
            return Ok(false);
        }
        Ok(Ok(())) => {}
    }
    // Reading it back (a state read, a snapshot) works too.
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    prop_assert!(Update::decode_v1(&state).is_ok());
    Ok(true)
}

/// The server's gap rule (`Ydoc::gap`): an update with a skip range, or
/// that starts above what `doc` holds of some client, is refused.
fn leaves_a_gap(doc: &Doc, shape: &wire::UpdateShape) -> bool {
    let sv = doc.transact().state_vector();
    shape.skip_of.is_some()
        || shape
            .runs
            .iter()
            .any(|(c, start, end)| start < end && *start > sv.get(&yrs::ClientID::new(*c)))
}

fn mutants(bytes: &[u8], seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rng = Rng(seed | 1);
    (0..n).map(move |_| mutate(bytes, &mut rng))
}

/// Runs one target: `FUZZ_CASES` generated cases (64 by default), then
/// prints how many inputs it fed the decoders.
fn fuzz<S: Strategy>(
    tally: &Tally,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(fuzzgen::config(64));
    let result = runner.run(&strategy, test);
    tally.report();
    if let Err(e) = result {
        panic!("fuzz target {} failed: {e}", tally.name);
    }
}

/// Structured updates (deep Any, every content kind, edge clocks,
/// parents by id) and their mutants.
#[test]
fn yjs_updates() {
    fuzz(
        &UPDATES,
        (fuzzgen::raw_update(), any::<u64>()),
        |(update, seed)| {
            let bytes = update.encode();
            exercise_update(&bytes)?;
            UPDATES.add(1);
            for m in mutants(&bytes, seed, fuzzgen::mutations(16)) {
                exercise_update(&m)?;
                UPDATES.add(1);
            }
            Ok(())
        },
    );
}

/// Honest updates pass every check and apply (no false refusals), and
/// their mutants never crash anything.
#[test]
fn honest_updates() {
    let ops = prop::collection::vec(fuzzgen::op(), 1..8);
    fuzz(
        &HONEST,
        (ops, 1u64..1000, any::<u64>()),
        |(ops, client, seed)| {
            let (updates, state) = fuzzgen::honest_updates(&ops, client);
            let doc = Doc::new();
            for u in updates.iter().chain(std::iter::once(&state)) {
                let shape = wire::check_update(u, &UpdateLimits::default());
                prop_assert!(
                    shape.is_ok(),
                    "an honest update was refused: {:?} {u:?}",
                    shape
                );
                let decoded = Update::decode_v1(u).expect("honest decodes");
                prop_assert!(doc.transact_mut().apply_update(decoded).is_ok());
                HONEST.add(1);
            }
            for m in mutants(&state, seed, fuzzgen::mutations(16)) {
                exercise_update(&m)?;
                HONEST.add(1);
            }
            Ok(())
        },
    );
}

/// A document under a stream of updates, by the server's rules
/// (`Ydoc::accept_update`): an update is accepted if it checks, decodes,
/// leaves no gap in a client's clocks and applies. One that names a parent
/// by id or arrives while structs are pending is applied at once and may
/// fail: it is refused and the document rebuilt from the accepted ones.
/// Any other update is applied later in a batch and must not fail. No
/// update may panic yrs (after a panic its `Doc` may not even drop
/// safely). After every accepted update the document's state loads into a
/// fresh document, and so does the replay of the accepted updates (what a
/// restart does): what the server serves and stores stays loadable.
#[test]
fn update_sequences_keep_a_loadable_document() {
    let updates = prop::collection::vec(fuzzgen::any_update(), 1..12);
    fuzz(&SEQUENCES, (updates, any::<u64>()), |(updates, seed)| {
        let mut rng = Rng(seed | 1);
        let mut accepted: Vec<Vec<u8>> = vec![base_state().to_vec()];
        let mut doc = doc_from(base_state());
        for u in updates {
            let u = if rng.below(2) == 0 {
                mutate(&u, &mut rng)
            } else {
                u
            };
            SEQUENCES.add(1);
            let Ok(shape) = wire::check_update(&u, &UpdateLimits::default()) else {
                continue;
            };
            let Ok(decoded) = Update::decode_v1(&u) else {
                continue;
            };
            if leaves_a_gap(&doc, &shape) {
                continue;
            }
            let at_once = shape.parent_by_id || doc.transact().store().pending_update().is_some();
            let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
                doc.transact_mut().apply_update(decoded)
            }));
            match applied {
                Ok(Ok(())) => accepted.push(u),
                Err(_) => {
                    return Err(TestCaseError::fail(format!(
                        "yrs panicked: accepted {accepted:?}, then {u:?}"
                    )))
                }
                Ok(Err(e)) => {
                    prop_assert!(
                        at_once,
                        "a batched update failed ({e}): accepted {accepted:?}, then {u:?}"
                    );
                    doc = replay(&accepted).map_err(|e| {
                        TestCaseError::fail(format!("accepted updates do not replay: {e}"))
                    })?;
                    continue;
                }
            }
            let state = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let fresh = Doc::new();
            let loaded = fresh
                .transact_mut()
                .apply_update(Update::decode_v1(&state).expect("state decodes"));
            prop_assert!(
                loaded.is_ok(),
                "the state does not load ({:?}): accepted {accepted:?}",
                loaded
            );
            prop_assert!(
                replay(&accepted).is_ok(),
                "accepted updates do not replay: {accepted:?}"
            );
        }
        Ok(())
    });
}

/// A document from updates applied one transaction each, as a restart
/// loads the log.
fn replay(updates: &[Vec<u8>]) -> Result<Doc, String> {
    let doc = Doc::new();
    for u in updates {
        let decoded = Update::decode_v1(u).map_err(|e| e.to_string())?;
        doc.transact_mut()
            .apply_update(decoded)
            .map_err(|e| e.to_string())?;
    }
    Ok(doc)
}

/// y-websocket frames: read whole; what a frame holds is exercised as the
/// server would (state vectors, updates, awareness).
#[test]
fn y_websocket_frames() {
    fuzz(
        &FRAMES,
        (fuzzgen::raw_frame(), any::<u64>()),
        |(messages, seed)| {
            let bytes = fuzzgen::frame(&messages);
            let read = wire::read_frame(&bytes);
            prop_assert!(
                read.as_ref().is_ok_and(|m| m.len() == messages.len()),
                "a composed frame: {read:?}"
            );
            exercise_frame(&bytes)?;
            FRAMES.add(1);
            for m in mutants(&bytes, seed, fuzzgen::mutations(16)) {
                exercise_frame(&m)?;
                FRAMES.add(1);
            }
            Ok(())
        },
    );
}

/// Awareness updates: what passes `check_awareness` decodes.
#[test]
fn awareness() {
    fuzz(
        &AWARENESS,
        (fuzzgen::awareness_update(), any::<u64>()),
        |(update, seed)| {
            prop_assert!(wire::check_awareness(&update).is_ok());
            prop_assert!(AwarenessUpdate::decode_v1(&update).is_ok());
            AWARENESS.add(1);
            for m in mutants(&update, seed, fuzzgen::mutations(32)) {
                if wire::check_awareness(&m).is_ok() {
                    prop_assert!(
                        AwarenessUpdate::decode_v1(&m).is_ok(),
                        "checked awareness does not decode: {m:?}"
                    );
                }
                AWARENESS.add(1);
            }
            Ok(())
        },
    );
}

/// The JSON envelope, shallow and deep, and its mutants: never a panic.
#[test]
fn json_envelope() {
    fuzz(
        &ENVELOPE,
        (fuzzgen::envelope_text(), any::<u64>()),
        |(text, seed)| {
            let _ = ClientFrame::decode(&text);
            let _ = ServerFrame::decode(&text);
            ENVELOPE.add(1);
            for m in mutants(text.as_bytes(), seed, fuzzgen::mutations(32)) {
                let m = String::from_utf8_lossy(&m);
                let _ = ClientFrame::decode(&m);
                let _ = ServerFrame::decode(&m);
                ENVELOPE.add(1);
            }
            Ok(())
        },
    );
}

/// Commit-log segments decode to exactly what was written; a mutant never
/// panics and yields a prefix of the records. Garbage changesets never
/// panic the replay decoder.
#[test]
fn commit_log_records() {
    let records = prop::collection::vec(
        (
            "[a-z][a-z0-9_-]{0,8}",
            any::<[u8; 16]>(),
            1u64..u64::MAX,
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        0..5,
    );
    fuzz(&RECORDS, (records, any::<u64>()), |(records, seed)| {
        let records: Vec<Record> = records
            .into_iter()
            .map(|(class, id, seq, changeset)| Record {
                class,
                id: roost::ObjectId(id),
                seq,
                changeset,
            })
            .collect();
        let mut bytes = SEGMENT_MAGIC.to_vec();
        for r in &records {
            r.encode_into(&mut bytes);
        }
        prop_assert_eq!(decode_segment(&bytes), (records.clone(), Tail::Clean));
        RECORDS.add(1);
        for m in mutants(&bytes, seed, fuzzgen::mutations(16)) {
            let (got, _) = decode_segment(&m);
            prop_assert!(
                got.len() <= records.len() && got[..] == records[..got.len()],
                "a mutant decoded to other records"
            );
            RECORDS.add(1);
        }
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        for r in &records {
            let mut changeset = vec![1];
            changeset.extend_from_slice(&r.changeset);
            let _ = roost::testing::apply_changeset(&conn, &changeset);
            let _ = roost::testing::apply_changeset(&conn, &r.changeset);
            RECORDS.add(2);
        }
        Ok(())
    });
}

fn exercise_frame(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(messages) = wire::read_frame(bytes) else {
        return Ok(());
    };
    for m in messages {
        match m {
            wire::YMessage::SyncStep1(sv) if wire::check_state_vector(sv).is_ok() => {
                prop_assert!(StateVector::decode_v1(sv).is_ok());
            }
            wire::YMessage::SyncStep2(u) | wire::YMessage::Update(u) => {
                exercise_update(u)?;
            }
            wire::YMessage::Awareness(a) if wire::check_awareness(a).is_ok() => {
                prop_assert!(AwarenessUpdate::decode_v1(a).is_ok());
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the server must hold after `update` is offered to it: `Some(new
/// state)` if it accepts it, `None` if it refuses it (and changes nothing).
fn predict(state: &[u8], update: &[u8]) -> Option<Vec<u8>> {
    let shape = wire::check_update(update, &UpdateLimits::default()).ok()?;
    let decoded = Update::decode_v1(update).ok()?;
    let doc = doc_from(state);
    if leaves_a_gap(&doc, &shape) {
        return None;
    }
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
        doc.transact_mut().apply_update(decoded)
    }));
    match applied {
        Ok(Ok(())) => Some(
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        ),
        _ => None,
    }
}

/// Whether two document states hold the same content: same state vector,
/// same deletions, same root values.
fn same_document(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (doc_from(a), doc_from(b));
    let (ta, tb) = (a.transact(), b.transact());
    let roots = |t: &yrs::Transaction<'_>| {
        let mut v: Vec<(String, String)> = t
            .root_refs()
            .map(|(name, out)| (name.to_owned(), format!("{:?}", out.to_json(t))))
            .collect();
        v.sort();
        v
    };
    ta.state_vector() == tb.state_vector()
        && ta.snapshot().delete_set == tb.snapshot().delete_set
        && roots(&ta) == roots(&tb)
}

/// Bounded fuzzing of the running binary: structured and mutated updates
/// over HTTP (the status must match the in-process prediction, and only
/// accepted ones change the stored document), and frames the server must
/// refuse over the Yjs socket (each closes 1008/1009). The process stays
/// up, the document never restarts, and the stored state at the end is
/// exactly the accepted updates applied to the starting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_input_against_the_binary_changes_nothing_it_refuses() -> anyhow::Result<()> {
    let cases: usize = std::env::var("FUZZ_BINARY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(dir.path(), &[]).await?;
    let client = http();
    let post = |body: Vec<u8>| {
        client
            .post(server.url("/v1/yjs/fz/update"))
            .body(body)
            .send()
    };
    assert_eq!(post(base_state().to_vec()).await?.status(), 200);
    // The server's document as it lives: every accepted update applied in
    // turn, as the server applies (and, on a restart, replays) them. The
    // prediction tries each update on a copy rebuilt from its state; the
    // two can differ on adversarial input (one id sent twice with other
    // contents), so what is kept is the live one.
    let live = doc_from(base_state());
    let mut mirror = base_state().to_vec();
    let starts = metric(&client, &server, "roost_object_starts_total").await?;
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("binary fuzz seed {seed} (FUZZ_SEED to rerun)");
    // The generator's randomness comes from the seed too: a failure reruns.
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        fuzzgen::config(1),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let mut rng = Rng(seed | 1);
    let (mut http_inputs, mut frames, mut accepted) = (0u64, 0u64, 0u64);
    let url = server.ws_url("/v1/yjs/fz");
    let mut sock = YClient::new();
    sock.connect(&url).await?;
    for i in 0..cases {
        let sample = |runner: &mut TestRunner, s: &dyn Fn() -> BoxedStrategy<Vec<u8>>| {
            s().new_tree(runner).map(|t| t.current())
        };
        let update = sample(&mut runner, &|| fuzzgen::any_update().boxed())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let update = if rng.below(2) == 0 {
            mutate(&update, &mut rng)
        } else {
            update
        };
        // Over HTTP.
        let want = predict(&mirror, &update);
        let resp = post(update.clone()).await?;
        let status = resp.status().as_u16();
        match (&want, status) {
            (Some(_), 200) => {
                let decoded = Update::decode_v1(&update)?;
                live.transact_mut().apply_update(decoded)?;
                mirror = live
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                accepted += 1;
            }
            (None, 400 | 413) => {}
            _ => anyhow::bail!(
                "input {i}: predicted {} but got {status}: {} (seed {seed}) {update:?}",
                if want.is_some() { "accept" } else { "refuse" },
                resp.text().await.unwrap_or_default()
            ),
        }
        http_inputs += 1;
        // Over the socket: a frame the server must refuse.
        let messages = sample(&mut runner, &|| {
            fuzzgen::raw_frame()
                .prop_map(|m| fuzzgen::frame(&m))
                .boxed()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bytes = mutate(&messages, &mut rng);
        if refused_by_syntax(&bytes) {
            sock.send_raw(bytes.clone()).await?;
            let code = sock.drain(Duration::from_secs(5)).await?;
            anyhow::ensure!(
                matches!(code, Some(1008 | 1009)),
                "frame {i}: closed with {code:?} (seed {seed}) {bytes:?}"
            );
            sock = YClient::new();
            sock.connect(&url).await?;
            frames += 1;
        }
    }
    let stored = client
        .get(server.url("/v1/yjs/fz/state"))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(
        same_document(&stored, &mirror),
        "the stored document is not the accepted updates (seed {seed})"
    );
    assert_eq!(
        metric(&client, &server, "roost_object_starts_total").await?,
        starts,
        "the document restarted (seed {seed})"
    );
    assert_eq!(
        http().get(server.url("/healthz")).send().await?.status(),
        200
    );
    eprintln!(
        "fuzz target binary: {} inputs ({http_inputs} HTTP updates, {accepted} accepted; {frames} refused frames), 0 crashes",
        http_inputs + frames
    );
    server.terminate().await?;
    Ok(())
}

/// Whether the server refuses this frame whole, before anything of it is
/// applied: it does not read, or a state vector or an update in it fails
/// its checks (a frame starting with a sync message: others are the
/// socket layer's, which reads them whole as well).
fn refused_by_syntax(bytes: &[u8]) -> bool {
    let Ok(messages) = wire::read_frame(bytes) else {
        return true;
    };
    if bytes.first() == Some(&1) {
        return !matches!(&messages[..], [wire::YMessage::Awareness(a)] if wire::check_awareness(a).is_ok());
    }
    if bytes.first() != Some(&0) {
        return false;
    }
    messages.iter().any(|m| match m {
        wire::YMessage::SyncStep1(sv) => {
            wire::check_state_vector(sv).is_err() || StateVector::decode_v1(sv).is_err()
        }
        wire::YMessage::SyncStep2(u) | wire::YMessage::Update(u) => {
            wire::check_update(u, &UpdateLimits::default()).is_err()
                || Update::decode_v1(u).is_err()
        }
        _ => false,
    })
}
