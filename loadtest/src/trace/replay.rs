//! A real editing trace turned into the Yjs updates its authors' editors
//! would have sent: one update per keystroke (patch), computed once before
//! the run so sending costs the generator nothing but a write.
//!
//! Formats (`/work/shared/data/editing-traces/README.md`, Joseph Gentle's
//! `editing-traces`): sequential (`txns: [{patches}]`, one author) and
//! concurrent (`kind: "concurrent"`, each txn with `agent` and `parents`,
//! its patches relative to the parents' version). Every agent is a yrs
//! `Doc`; before typing a txn it merges the other agents' updates its
//! parents include (those become the txn's dependencies: a writer sends it
//! only once it has received them), then types each patch in its own
//! transaction. An agent's txns must form a chain (each includes its
//! previous one), which real editing traces do.
//!
//! The oracle: every agent's updates applied to a fresh document give the
//! trace's `endContent` (`Replay::build` checks it), and every prefix the
//! run may stop at is a set of updates closed under dependencies, whose
//! text `expected_text` computes the same way.
//!
//! It does not keep non-ASCII traces (positions would need unit
//! conversions; both traces of the collection are ASCII).

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use yrs::updates::decoder::Decode as _;
use yrs::{Doc, GetString as _, ReadTxn as _, Text as _, Transact as _, Update};

use super::key::{update_key, UpdateKey};
use crate::yjs::TEXT_NAME;

#[derive(Deserialize)]
struct TraceFile {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "startContent")]
    start_content: String,
    #[serde(rename = "endContent")]
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    #[serde(default)]
    parents: Option<Vec<usize>>,
    #[serde(default)]
    agent: usize,
    patches: Vec<(usize, usize, String)>,
}

/// One keystroke's update.
pub(crate) struct Step {
    pub bytes: Vec<u8>,
    /// Updates of each agent (by index) that must be received first:
    /// this agent's own entry is unused.
    pub deps: Vec<u32>,
    /// Its place among every agent's keystrokes, in trace order: with a
    /// `--rate`, it is due at `place / (rate × agents)`, so the agents
    /// interleave as the trace did.
    pub place: u32,
}

/// Every agent's updates, in the order each agent sends them.
pub(crate) struct Replay {
    pub agents: Vec<Vec<Step>>,
    /// Which agent's which update a received update is (see `key.rs`).
    pub index: HashMap<UpdateKey, (u16, u32)>,
    /// Keys shared by two updates (concurrent deletes of one character):
    /// their deliveries count for the first.
    pub ambiguous: usize,
    pub end_content: String,
    /// Whether `keystrokes` cut the trace short.
    pub truncated: bool,
}

/// Client ids of the agents: small (y-sweet, see `yjs::client_id`) and fixed,
/// so every document of a run gets the same bytes.
const FIRST_CLIENT_ID: u64 = 0x5eed_0000;

impl Replay {
    /// Reads a `.json` or `.json.gz` trace and computes its updates (the
    /// first `keystrokes` txns of the trace order, all if 0).
    pub(crate) fn load(path: &Path, keystrokes: usize) -> anyhow::Result<Replay> {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let json = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::with_capacity(raw.len() * 8);
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .with_context(|| format!("gunzipping {}", path.display()))?;
            out
        } else {
            raw
        };
        let file: TraceFile = serde_json::from_slice(&json)
            .with_context(|| format!("parsing {} as an editing trace", path.display()))?;
        Replay::build(file, keystrokes)
    }

    /// `load`, through a cache file of the computed updates (their
    /// computation takes yrs tens of seconds for a long trace); a cache
    /// that cannot be read or written is only skipped.
    pub(crate) fn load_cached(path: &Path, keystrokes: usize) -> anyhow::Result<Replay> {
        let cache = super::cache::path_for(path, keystrokes);
        if let Some((steps, end, truncated)) = cache.as_deref().and_then(super::cache::read) {
            return Replay::from_steps(steps, end, truncated);
        }
        let replay = Replay::load(path, keystrokes)?;
        if let Some(c) = &cache {
            super::cache::write(c, &replay);
        }
        Ok(replay)
    }

    /// The replay of computed updates: their index by key.
    pub(crate) fn from_steps(
        agents: Vec<Vec<Step>>,
        end_content: String,
        truncated: bool,
    ) -> anyhow::Result<Replay> {
        let mut index = HashMap::new();
        let mut ambiguous = 0;
        for (a, steps) in agents.iter().enumerate() {
            for (k, s) in steps.iter().enumerate() {
                let key = update_key(&s.bytes)?
                    .with_context(|| format!("agent {a}'s update {k} changes nothing"))?;
                if index.insert(key, (a as u16, k as u32)).is_some() {
                    ambiguous += 1;
                }
            }
        }
        Ok(Replay {
            agents,
            index,
            ambiguous,
            end_content,
            truncated,
        })
    }

    fn build(mut file: TraceFile, keystrokes: usize) -> anyhow::Result<Replay> {
        if !file.start_content.is_empty() {
            bail!("traces with a startContent are not supported");
        }
        let ascii = file.end_content.is_ascii()
            && file
                .txns
                .iter()
                .all(|t| t.patches.iter().all(|p| p.2.is_ascii()));
        if !ascii {
            bail!("only ASCII traces are supported (positions are not converted)");
        }
        let concurrent = file.kind.as_deref() == Some("concurrent");
        let truncated = keystrokes > 0 && keystrokes < file.txns.len();
        if truncated {
            file.txns.truncate(keystrokes);
        }
        let mut builder = Builder::new(&file, concurrent)?;
        for (i, txn) in file.txns.iter().enumerate() {
            builder.txn(i, txn)?;
        }
        let replay = builder.finish(file.end_content, truncated)?;
        if !truncated {
            let text =
                replay.expected_text(&replay.agents.iter().map(Vec::len).collect::<Vec<_>>())?;
            if text != replay.end_content {
                bail!(
                    "replaying the trace gives {} characters, not its endContent's {} (a bug in the replay)",
                    text.len(),
                    replay.end_content.len()
                );
            }
        }
        Ok(replay)
    }

    /// The text of a document holding each agent's first `sent[a]` updates
    /// (a prefix closed under dependencies: what a run sent).
    pub(crate) fn expected_text(&self, sent: &[usize]) -> anyhow::Result<String> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text(TEXT_NAME);
        {
            let mut txn = doc.transact_mut();
            for (steps, &n) in self.agents.iter().zip(sent) {
                for s in &steps[..n.min(steps.len())] {
                    txn.apply_update(Update::decode_v1(&s.bytes)?)?;
                }
            }
        }
        let txn = doc.transact();
        if txn.store().pending_update().is_some() {
            bail!("the sent updates are not closed under their dependencies");
        }
        let s = text.get_string(&txn);
        Ok(s)
    }

    pub(crate) fn total(&self) -> usize {
        self.agents.iter().map(Vec::len).sum()
    }
}

/// Agents' documents while the updates are computed.
struct Builder {
    docs: Vec<Doc>,
    /// Per agent: its updates so far.
    steps: Vec<Vec<Step>>,
    /// Per agent: how many of each agent's updates its `Doc` holds.
    holds: Vec<Vec<u32>>,
    /// Per txn: (agent, that agent's update count after it) and its
    /// version: updates of each agent it includes.
    txn_end: Vec<(usize, u32)>,
    version: Vec<Vec<u32>>,
    concurrent: bool,
}

impl Builder {
    fn new(file: &TraceFile, concurrent: bool) -> anyhow::Result<Builder> {
        let agents = if concurrent {
            file.txns.iter().map(|t| t.agent + 1).max().unwrap_or(1)
        } else {
            1
        };
        if agents > 64 {
            bail!("{agents} agents: at most 64 are supported");
        }
        let docs = (0..agents)
            .map(|a| Doc::with_client_id(FIRST_CLIENT_ID + a as u64))
            .collect();
        Ok(Builder {
            docs,
            steps: (0..agents).map(|_| Vec::new()).collect(),
            holds: vec![vec![0; agents]; agents],
            txn_end: Vec::with_capacity(file.txns.len()),
            version: Vec::with_capacity(file.txns.len()),
            concurrent,
        })
    }

    /// The version txn `i` was typed against: the union of its parents'.
    fn parents_version(&self, i: usize, txn: &Txn) -> anyhow::Result<Vec<u32>> {
        let n = self.docs.len();
        let parents: Vec<usize> = match (&txn.parents, self.concurrent) {
            (Some(p), true) => p.clone(),
            _ => i.checked_sub(1).into_iter().collect(),
        };
        let mut v = vec![0u32; n];
        for p in parents {
            let pv = self
                .version
                .get(p)
                .with_context(|| format!("txn {i} names a later parent {p}"))?;
            for (x, y) in v.iter_mut().zip(pv) {
                *x = (*x).max(*y);
            }
        }
        Ok(v)
    }

    fn txn(&mut self, i: usize, txn: &Txn) -> anyhow::Result<()> {
        let a = if self.concurrent { txn.agent } else { 0 };
        let want = self.parents_version(i, txn)?;
        // The agent's document must hold exactly the parents' version.
        for (b, &w) in want.iter().enumerate() {
            let held = self.holds[a][b];
            if held > w || (b == a && held != w) {
                bail!("txn {i}: agent {a} holds {held} updates of agent {b}, its parents {w} (agents' txns must form a chain)");
            }
            if held < w {
                let mut t = self.docs[a].transact_mut();
                for s in &self.steps[b][held as usize..w as usize] {
                    t.apply_update(Update::decode_v1(&s.bytes)?)?;
                }
                self.holds[a][b] = w;
            }
        }
        let text = self.docs[a].get_or_insert_text(TEXT_NAME);
        for (pos, del, ins) in &txn.patches {
            let mut t = self.docs[a].transact_mut();
            if *del > 0 {
                text.remove_range(&mut t, *pos as u32, *del as u32);
            }
            if !ins.is_empty() {
                text.insert(&mut t, *pos as u32, ins);
            }
            let bytes = t.encode_update_v1();
            drop(t);
            let mut deps = want.clone();
            deps[a] = 0;
            let place = self.steps.iter().map(Vec::len).sum::<usize>() as u32;
            self.steps[a].push(Step { bytes, deps, place });
        }
        let count = self.steps[a].len() as u32;
        self.holds[a][a] = count;
        let mut version = want;
        version[a] = count;
        self.txn_end.push((a, count));
        self.version.push(version);
        Ok(())
    }

    fn finish(self, end_content: String, truncated: bool) -> anyhow::Result<Replay> {
        Replay::from_steps(self.steps, end_content, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TraceFile {
        serde_json::from_str(json).expect("valid trace")
    }

    #[test]
    fn sequential_trace_replays_to_its_end_content() {
        let t = parse(
            r#"{"startContent":"","endContent":"hXlo!","txns":[
            {"patches":[[0,0,"h"]]},{"patches":[[1,0,"e"]]},{"patches":[[2,0,"l"]]},
            {"patches":[[3,0,"l"]]},{"patches":[[4,0,"o"]]},{"patches":[[1,2,"X"]]},
            {"patches":[[4,0,"!"]]}]}"#,
        );
        let r = Replay::build(t, 0).expect("replays");
        assert_eq!(r.agents.len(), 1);
        assert_eq!(r.total(), 7);
        assert_eq!(r.expected_text(&[7]).expect("text"), "hXlo!");
        assert_eq!(r.expected_text(&[3]).expect("text"), "hel");
        assert_eq!(r.index.len(), 7);
    }

    #[test]
    fn concurrent_trace_merges_parents_and_records_dependencies() {
        // Agent 0 types "ab", agent 1 (having seen "a") types "X" at 0
        // concurrently with "b"; agent 0 then merges and appends "!".
        let t = parse(
            r#"{"kind":"concurrent","endContent":"Xab!","numAgents":2,"txns":[
            {"parents":[],"agent":0,"patches":[[0,0,"a"]]},
            {"parents":[0],"agent":0,"patches":[[1,0,"b"]]},
            {"parents":[0],"agent":1,"patches":[[0,0,"X"]]},
            {"parents":[1,2],"agent":0,"patches":[[3,0,"!"]]}]}"#,
        );
        let r = Replay::build(t, 0).expect("replays");
        assert_eq!(r.agents[0].len(), 3);
        assert_eq!(r.agents[1].len(), 1);
        assert_eq!(r.agents[1][0].deps, vec![1, 0]);
        assert_eq!(r.agents[0][2].deps, vec![0, 1]);
        let places: Vec<u32> = r.agents[0].iter().map(|s| s.place).collect();
        assert_eq!((places, r.agents[1][0].place), (vec![0, 1, 3], 2));
        assert_eq!(r.expected_text(&[3, 1]).expect("text"), "Xab!");
        assert_eq!(r.expected_text(&[2, 0]).expect("text"), "ab");
    }

    #[test]
    fn a_wrong_end_content_is_a_replay_error() {
        let t = parse(r#"{"endContent":"no","txns":[{"patches":[[0,0,"y"]]}]}"#);
        assert!(Replay::build(t, 0).is_err());
        let t = parse(
            r#"{"endContent":"no","txns":[{"patches":[[0,0,"y"]]},{"patches":[[1,0,"z"]]}]}"#,
        );
        // Cut short, the end content is not compared.
        let r = Replay::build(t, 1).expect("cut short");
        assert!(r.truncated);
        assert_eq!(r.expected_text(&[1]).expect("text"), "y");
    }
}
