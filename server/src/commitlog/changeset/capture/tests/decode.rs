//! Decoding changesets never panics: truncated, corrupted and hostile bytes
//! are refused without touching the database.

use super::property::Rng;
use super::*;

fn sample_changeset() -> Vec<u8> {
    let a = capturing(SHAPES);
    a.execute_batch(
        "INSERT INTO plain VALUES(1, 2.5, 'three'); INSERT INTO ipk VALUES(7, 'x', 1.0, x'00ff');
         INSERT INTO wr VALUES('k', 'v', 1); UPDATE wr SET k1 = 'k2';
         UPDATE plain SET rowid = 9; DELETE FROM ipk;
         INSERT INTO gen(a, d) VALUES(1, NULL);",
    )
    .expect("writes");
    take_replayable(&a)
}

#[test]
fn garbage_never_panics() {
    let good = sample_changeset();
    let b = plain(SHAPES);
    // Every truncation either decodes (at a change boundary) or fails
    // without touching the database.
    for len in 0..good.len() {
        let before = contents(&b);
        if apply_changeset(&b, &good[..len]).is_err() {
            assert_eq!(
                before,
                contents(&b),
                "failed apply left changes (len {len})"
            );
        }
    }
    let mut rng = Rng(0xBAD_5EED);
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        let _ = apply_changeset(&b, &bytes);
    }
    for _ in 0..3000 {
        let len = rng.below(64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.chance(70) && !bytes.is_empty() {
            bytes[0] = FORMAT_V1;
        }
        let _ = apply_changeset(&b, &bytes);
    }
    // Huge claimed lengths and counts are refused, not allocated.
    for bytes in [
        vec![FORMAT_V1, OP_INSERT, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![FORMAT_V1, OP_INSERT, 1, b't', 0xff, 0xff, 0x03, 0],
        vec![
            FORMAT_V1, OP_INSERT, 1, b't', 1, 0, T_TEXT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0x01,
        ],
        vec![FORMAT_V1, OP_DELETE, 1, b't', 1, 0, T_SAME],
        vec![FORMAT_V1, OP_INSERT, 1, b't', 1, 0, T_REAL, 1, 2],
        vec![FORMAT_V1, 9],
        vec![b'T', 1, 2, 3],
    ] {
        assert!(apply_changeset(&b, &bytes).is_err(), "{bytes:?}");
    }
}
