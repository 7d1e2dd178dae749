//! A cache of a trace's computed updates (`Replay`), in the system's
//! temporary directory, named by the trace file's name, size and
//! modification time and the `--keystrokes` cut. Written only after the
//! replay passed its `endContent` check; a file that does not read back
//! whole is ignored (and rewritten).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::replay::{Replay, Step};

const MAGIC: &[u8] = b"roost-load trace cache 2\n";

pub(super) fn path_for(trace: &Path, keystrokes: usize) -> Option<PathBuf> {
    let meta = std::fs::metadata(trace).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let name = trace.file_name()?.to_string_lossy();
    let dir = std::env::temp_dir().join("roost-load-traces");
    Some(dir.join(format!("{name}-{}-{mtime}-{keystrokes}.bin", meta.len())))
}

pub(super) fn write(path: &Path, replay: &Replay) {
    let mut out = MAGIC.to_vec();
    let put = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_le_bytes());
    put(&mut out, replay.agents.len());
    for steps in &replay.agents {
        put(&mut out, steps.len());
        for s in steps {
            put(&mut out, s.deps.len());
            for d in &s.deps {
                put(&mut out, *d as usize);
            }
            put(&mut out, s.place as usize);
            put(&mut out, s.bytes.len());
            out.extend_from_slice(&s.bytes);
        }
    }
    put(&mut out, replay.end_content.len());
    out.extend_from_slice(replay.end_content.as_bytes());
    out.push(u8::from(replay.truncated));
    // Written aside and renamed, so a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let ok = path
        .parent()
        .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        && std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&out))
            .is_ok()
        && std::fs::rename(&tmp, path).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
}

type Cached = (Vec<Vec<Step>>, String, bool);

pub(super) fn read(path: &Path) -> Option<Cached> {
    let raw = std::fs::read(path).ok()?;
    let mut r = Reader {
        b: raw.strip_prefix(MAGIC)?,
    };
    let agents = r.n()?;
    let mut all = Vec::with_capacity(agents.min(64));
    for _ in 0..agents {
        let n = r.n()?;
        let mut steps = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let nd = r.n()?;
            let deps = (0..nd)
                .map(|_| r.n().map(|d| d as u32))
                .collect::<Option<Vec<_>>>()?;
            let place = r.n()? as u32;
            let len = r.n()?;
            steps.push(Step {
                bytes: r.take(len)?.to_vec(),
                deps,
                place,
            });
        }
        all.push(steps);
    }
    let len = r.n()?;
    let end = String::from_utf8(r.take(len)?.to_vec()).ok()?;
    let truncated = *r.take(1)?.first()? == 1;
    r.b.is_empty().then_some((all, end, truncated))
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.b.split_at_checked(n)?;
        self.b = rest;
        Some(head)
    }

    fn n(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_reads_back_whole_and_a_cut_file_is_ignored() {
        let steps = vec![
            vec![Step {
                bytes: vec![1, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 0],
                deps: vec![0, 2],
                place: 0,
            }],
            vec![],
        ];
        let replay = Replay::from_steps(steps, "a".into(), true).expect("valid");
        let dir = tempfile_dir();
        let path = dir.join("x.bin");
        write(&path, &replay);
        let (agents, end, truncated) = read(&path).expect("reads back");
        assert_eq!(agents.len(), 2);
        assert_eq!(agents[0][0].bytes, replay.agents[0][0].bytes);
        assert_eq!(agents[0][0].deps, vec![0, 2]);
        assert_eq!(agents[0][0].place, 0);
        assert_eq!((end.as_str(), truncated), ("a", true));
        let raw = std::fs::read(&path).expect("written");
        std::fs::write(&path, &raw[..raw.len() - 1]).expect("cut");
        assert!(read(&path).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("roost-load-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }
}
