//! Unit tests of the socket tables (`table.rs`).

use super::*;

#[test]
fn tags_select_sockets() {
    let hub = SocketHub::default();
    let key = ObjectKey::new("room", "r").expect("key");
    let mk = |tags: &[&str]| {
        let mut e = SocketEntry::new(Arc::new(Outbox::new(1000)), false);
        e.set_tags(tags.iter().map(|t| t.to_string()).collect());
        e.accepted = true;
        e
    };
    let t = hub.insert(&key, SocketId(1), mk(&["a"]), 10).expect("room");
    hub.insert(&key, SocketId(2), mk(&["a", "b"]), 10)
        .expect("room");
    assert!(hub.insert(&key, SocketId(3), mk(&[]), 2).is_none(), "limit");
    assert_eq!(t.ids(Some("a")), vec![SocketId(1), SocketId(2)]);
    assert_eq!(t.ids(Some("b")), vec![SocketId(2)]);
    assert_eq!(
        t.broadcast(Some("a"), &Message::Text("hi".into()), Some(SocketId(1))),
        1
    );
    hub.remove(&key.id, SocketId(1));
    hub.remove(&key.id, SocketId(2));
    assert!(hub.is_empty());
    assert_eq!(hub.open.load(Ordering::Relaxed), 0);
}

#[test]
fn a_deleted_objects_sockets_are_counted_out() {
    let hub = SocketHub::default();
    let key = ObjectKey::new("room", "d").expect("key");
    for i in 0..3 {
        let entry = SocketEntry::new(Arc::new(Outbox::new(1000)), false);
        hub.insert(&key, SocketId(i), entry, 10).expect("room");
    }
    assert_eq!(hub.remove_object(&key.id).len(), 3);
    hub.remove(&key.id, SocketId(0));
    assert_eq!(hub.open.load(Ordering::Relaxed), 0);
}

fn texts(o: &Outbox) -> Vec<String> {
    o.take()
        .0
        .into_iter()
        .map(|f| match f {
            OutFrame::Msg(Message::Text(t)) => t.as_str().to_owned(),
            OutFrame::Close(code, _) => format!("close {code}"),
            OutFrame::Msg(_) | OutFrame::Control(_) => "other".into(),
        })
        .collect()
}

#[test]
fn staged_frames_keep_per_socket_order_and_the_outbox_limit() {
    let hub = SocketHub::default();
    let key = ObjectKey::new("room", "s").expect("key");
    let outboxes: Vec<Arc<Outbox>> = (0..3).map(|_| Arc::new(Outbox::new(64))).collect();
    let mut table = None;
    for (i, o) in outboxes.iter().enumerate() {
        let mut entry = SocketEntry::new(o.clone(), false);
        entry.accepted = true;
        table = hub.insert(&key, SocketId(i as u64), entry, 10);
    }
    let t = table.expect("table");
    let mut staged = Staged::default();
    t.stage_broadcast(
        None,
        &Message::Text("a".into()),
        Some(SocketId(0)),
        &mut staged,
    );
    t.stage(
        SocketId(0),
        OutFrame::Msg(Message::Text("only 0".into())),
        &mut staged,
    );
    t.stage_broadcast(
        None,
        &Message::Text("b".into()),
        Some(SocketId(1)),
        &mut staged,
    );
    t.stage(
        SocketId(2),
        OutFrame::Close(1000, "bye".into()),
        &mut staged,
    );
    t.stage(
        SocketId(9),
        OutFrame::Msg(Message::Text("nobody".into())),
        &mut staged,
    );
    assert!(
        texts(&outboxes[0]).is_empty(),
        "nothing is queued before flush"
    );
    staged.flush();
    assert_eq!(texts(&outboxes[0]), ["only 0", "b"]);
    assert_eq!(texts(&outboxes[1]), ["a"]);
    assert_eq!(texts(&outboxes[2]), ["a", "b", "close 1000"]);
    // A staged burst over the limit kills the socket as single pushes would.
    let mut staged = Staged::default();
    for _ in 0..3 {
        t.stage(
            SocketId(1),
            OutFrame::Msg(Message::Text("x".repeat(30).into())),
            &mut staged,
        );
    }
    staged.flush();
    assert!(outboxes[1].is_killed());
    assert!(!outboxes[0].is_killed());
}
