//! What identifies a keystroke's update on the wire, read from its first
//! bytes without decoding it: the first struct's id for an insert, else the
//! smallest deleted id. Servers that re-encode what they broadcast
//! (y-websocket-server, Hocuspocus, y-sweet) keep both: one transaction's
//! structs start at the sender's clock, and a delete set names the same
//! ranges in whatever client order.

use yrs::encoding::read::{Cursor, Read as _};

/// (0 insert / 1 delete, client, clock).
pub(crate) type UpdateKey = (u8, u64, u32);

/// The key of a v1 update; `None` for one that changes nothing. Never
/// panics on any input.
pub(crate) fn update_key(update: &[u8]) -> anyhow::Result<Option<UpdateKey>> {
    let mut c = Cursor::new(update);
    let clients: u32 = c.read_var().map_err(wrap)?;
    if clients > 0 {
        let _structs: u32 = c.read_var().map_err(wrap)?;
        let client: u64 = c.read_var().map_err(wrap)?;
        let clock: u32 = c.read_var().map_err(wrap)?;
        return Ok(Some((0, client, clock)));
    }
    let ds_clients: u32 = c.read_var().map_err(wrap)?;
    let mut least: Option<(u64, u32)> = None;
    for _ in 0..ds_clients {
        let client: u64 = c.read_var().map_err(wrap)?;
        let ranges: u32 = c.read_var().map_err(wrap)?;
        for _ in 0..ranges {
            let clock: u32 = c.read_var().map_err(wrap)?;
            let _len: u32 = c.read_var().map_err(wrap)?;
            if least.is_none_or(|l| (client, clock) < l) {
                least = Some((client, clock));
            }
        }
    }
    Ok(least.map(|(client, clock)| (1, client, clock)))
}

fn wrap(e: yrs::encoding::read::Error) -> anyhow::Error {
    anyhow::anyhow!("update header: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, Text as _, Transact as _};

    #[test]
    fn inserts_and_deletes_have_keys() {
        let doc = Doc::with_client_id(7);
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, "abc");
        let u = txn.encode_update_v1();
        drop(txn);
        assert_eq!(update_key(&u).expect("valid"), Some((0, 7, 0)));
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 1, "z");
        let u = txn.encode_update_v1();
        drop(txn);
        assert_eq!(update_key(&u).expect("valid"), Some((0, 7, 3)));
        let mut txn = doc.transact_mut();
        t.remove_range(&mut txn, 2, 2);
        let u = txn.encode_update_v1();
        drop(txn);
        // "azbc" without "bc": clocks 1 and 2.
        assert_eq!(update_key(&u).expect("valid"), Some((1, 7, 1)));
        assert_eq!(update_key(&[0, 0]).expect("valid"), None);
        for bad in [&[][..], &[1], &[0], &[0, 1, 5], &[0xff, 0xff]] {
            let _ = update_key(bad);
        }
        assert!(update_key(&[]).is_err());
    }
}
