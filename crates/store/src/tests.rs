//! Unit tests of the store on the in-memory filesystem: commit, history, rollback, pruning,
//! refusal of invalid candidates, recovery, and a crash at every mutation of a commit.
//! Must not touch the real filesystem (the crash test in `tests/crash.rs` does).

use super::*;
use tandem_config::MemoryCertFiles;

fn sample(weight: u32) -> String {
    format!(
        "version: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:8080\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - {{ name: app1, address: 127.0.0.1:9001, weight: {weight} }}\n"
    )
}

fn store(fs: &MemFs) -> Store {
    Store::with_fs(
        Box::new(fs.clone()),
        PathBuf::from("/data/config"),
        Box::new(MemoryCertFiles::default()),
    )
    .expect("open store")
}

fn info(comment: &str, time_ms: u64) -> CommitInfo {
    CommitInfo {
        author: "admin".into(),
        node: Some("lb1".into()),
        time_ms,
        comment: comment.into(),
    }
}

#[test]
fn empty_store_says_what_to_do() {
    let s = store(&MemFs::new());
    let err = s.load_current().unwrap_err();
    assert!(matches!(err, StoreError::Empty(_)));
    assert!(err.to_string().contains("config commit"), "{err}");
    assert!(s.history().unwrap().is_empty());
}

#[test]
fn commits_are_numbered_and_chained() {
    let s = store(&MemFs::new());
    let g1 = s.commit(&sample(10), &info("first", 1000)).unwrap();
    let g2 = s.commit(&sample(20), &info("second", 2000)).unwrap();
    assert_eq!((g1.meta.number, g2.meta.number), (1, 2));
    assert_eq!(g2.meta.parent, Some(1));
    assert_eq!(
        g2.meta.parent_fingerprint.as_deref(),
        Some(g1.meta.fingerprint.as_str())
    );
    assert_eq!(g2.meta.schema_version, 1);
    let cur = s.load_current().unwrap();
    assert_eq!(cur, g2);
    assert_eq!(cur.text, sample(20), "text is kept as written");
    let h = s.history().unwrap();
    assert_eq!(h.iter().map(|m| m.number).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(h[1].comment, "first");
    assert_eq!(h[1].time_ms, 1000);
}

#[test]
fn invalid_candidate_is_refused_with_positions_and_nothing_is_written() {
    let fs = MemFs::new();
    let s = store(&fs);
    s.commit(&sample(10), &info("", 1)).unwrap();
    let before = fs.paths();
    let bad = sample(10).replace("weight: 10", "weight: lots");
    let err = s.commit(&bad, &info("", 2)).unwrap_err();
    let StoreError::Invalid(report) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    let d = &report.diagnostics[0];
    assert_eq!((d.line, d.column), (9, 56), "{report}");
    assert!(d.path.contains("weight"), "{d}");
    assert_eq!(fs.paths(), before);
    assert_eq!(s.load_current().unwrap().meta.number, 1);
}

#[test]
fn rollback_commits_the_old_text_as_a_new_generation() {
    let s = store(&MemFs::new());
    s.commit(&sample(10), &info("", 1)).unwrap();
    s.commit(&sample(20), &info("", 2)).unwrap();
    let g3 = s.rollback(1, &info("back", 3)).unwrap();
    assert_eq!(g3.meta.number, 3);
    assert_eq!(g3.meta.restores, Some(1));
    assert_eq!(g3.text, sample(10));
    assert_eq!(
        g3.meta.fingerprint,
        s.generation(1).unwrap().meta.fingerprint
    );
    assert!(matches!(
        s.rollback(99, &info("", 4)),
        Err(StoreError::NoSuchGeneration(99))
    ));
}

#[test]
fn history_is_pruned_to_the_newest_hundred() {
    let s = store(&MemFs::new());
    for i in 1..=(KEEP_GENERATIONS as u32 + 5) {
        s.commit(&sample(i), &info("", u64::from(i))).unwrap();
    }
    let h = s.history().unwrap();
    assert_eq!(h.len(), KEEP_GENERATIONS);
    assert_eq!(h.first().unwrap().number, KEEP_GENERATIONS as u64 + 5);
    assert_eq!(h.last().unwrap().number, 6);
    assert!(matches!(
        s.generation(5),
        Err(StoreError::NoSuchGeneration(5))
    ));
}

#[test]
fn candidate_and_pending_confirm_round_trip() {
    let s = store(&MemFs::new());
    assert_eq!(s.candidate().unwrap(), None);
    s.set_candidate("not even yaml: [").unwrap();
    assert_eq!(s.candidate().unwrap().as_deref(), Some("not even yaml: ["));
    s.clear_candidate().unwrap();
    assert_eq!(s.candidate().unwrap(), None);
    let p = PendingConfirm {
        generation: 4,
        restore: 3,
        deadline_ms: 99,
        author: "admin".into(),
    };
    s.set_pending_confirm(&p).unwrap();
    assert_eq!(s.pending_confirm().unwrap(), Some(p));
    s.clear_pending_confirm().unwrap();
    assert_eq!(s.pending_confirm().unwrap(), None);
}

#[test]
fn a_tampered_generation_is_reported_not_loaded() {
    let fs = MemFs::new();
    let s = store(&fs);
    s.commit(&sample(10), &info("", 1)).unwrap();
    fs.write_atomic(
        Path::new("/data/config/generations/000001.yaml"),
        sample(11).as_bytes(),
    )
    .unwrap();
    let err = s.load_current().unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { number: 1, .. }),
        "{err}"
    );
}

/// A crash after every possible number of completed mutations of a commit: the reopened
/// store always loads, and holds the old or the new generation.
#[test]
fn crash_at_every_step_of_a_commit_leaves_old_or_new() {
    for steps in 0..10 {
        let fs = MemFs::new();
        let s = store(&fs);
        for i in 1..=3 {
            s.commit(&sample(i), &info("", 1)).unwrap();
        }
        fs.fail_after(Some(steps));
        let result = s.commit(&sample(50), &info("", 2));
        fs.fail_after(None);
        let reopened = store(&fs);
        let cur = reopened.load_current().expect("store loads after a crash");
        match cur.meta.number {
            3 => {
                assert!(
                    result.is_err(),
                    "steps={steps}: commit said ok but old is current"
                );
                assert_eq!(cur.text, sample(3));
            }
            4 => assert_eq!(cur.text, sample(50)),
            n => panic!("steps={steps}: unexpected current generation {n}"),
        }
        // No orphan stays behind, and the next commit continues the numbering.
        let next = reopened.commit(&sample(60), &info("", 3)).unwrap();
        assert_eq!(next.meta.number, cur.meta.number + 1);
        assert_eq!(next.meta.parent, Some(cur.meta.number));
    }
}

#[test]
fn a_synced_generation_keeps_its_number_above_the_current_one() {
    let s = store(&MemFs::new());
    let g5 = s
        .commit_numbered(&sample(10), &info("from lb1", 1000), 5)
        .unwrap();
    assert_eq!((g5.meta.number, g5.meta.parent), (5, None));
    let g6 = s.commit(&sample(20), &info("local", 2000)).unwrap();
    assert_eq!((g6.meta.number, g6.meta.parent), (6, Some(5)));
    let err = s
        .commit_numbered(&sample(30), &info("old", 3000), 6)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NumberNotAbove {
                number: 6,
                current: 6
            }
        ),
        "{err}"
    );
    assert_eq!(
        s.history()
            .unwrap()
            .iter()
            .map(|m| m.number)
            .collect::<Vec<_>>(),
        vec![6, 5]
    );
    // Reopening keeps the gap and the generations.
    assert_eq!(s.load_current().unwrap().meta.number, 6);
}

#[test]
fn a_commit_never_marked_applied_is_reported_as_interrupted() {
    let fs = MemFs::new();
    let s = store(&fs);
    assert_eq!(s.interrupted().unwrap(), None, "empty store");
    s.commit(&sample(10), &info("first", 1000)).unwrap();
    assert_eq!(
        s.interrupted().unwrap(),
        None,
        "nothing marked: first commit"
    );
    s.mark_applied(1).unwrap();
    assert_eq!(s.applied().unwrap(), Some(1));
    s.commit(&sample(20), &info("second", 2000)).unwrap();
    // The supervisor stopped before applying generation 2: a reopened store says so.
    let reopened = store(&fs);
    assert_eq!(
        reopened.interrupted().unwrap(),
        Some(Interrupted {
            generation: 2,
            last_applied: 1
        })
    );
    reopened.mark_applied(2).unwrap();
    assert_eq!(reopened.interrupted().unwrap(), None);
    assert!(matches!(
        reopened.mark_applied(7),
        Err(StoreError::NoSuchGeneration(7))
    ));
}

/// Three committed generations, the last marked applied; the filesystem to corrupt.
fn three(fs: &MemFs) -> Store {
    let s = store(fs);
    for i in 1..=3 {
        s.commit(&sample(i), &info("", u64::from(i))).unwrap();
    }
    s.mark_applied(3).unwrap();
    s
}

fn put(fs: &MemFs, name: &str, bytes: &[u8]) {
    fs.write_atomic(&Path::new("/data/config").join(name), bytes)
        .unwrap();
}

#[test]
fn an_unreadable_or_dangling_current_pointer_is_repaired_to_the_newest_intact_generation() {
    for (bad, problem) in [
        (&b"\x00garbage{"[..], "unreadable current pointer"),
        (&b""[..], "unreadable current pointer"),
        (
            &br#"{"generation":7,"fingerprint":"00"}"#[..],
            "it names generation 7, which is not in the store",
        ),
    ] {
        let fs = MemFs::new();
        three(&fs);
        put(&fs, "current", bad);
        let s = store(&fs);
        assert_eq!(s.load_current().unwrap().text, sample(3), "{problem}");
        let r = s.repairs();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].file, Path::new("/data/config/current"));
        assert!(r[0].problem.contains(problem), "{}", r[0]);
        assert!(
            r[0].to_string().contains("starts on generation 3"),
            "{}",
            r[0]
        );
        assert_eq!(
            fs.read(Path::new("/data/config/current.corrupt")).unwrap(),
            bad
        );
        // Nothing was lost, the last good one is still the applied one, numbering goes on.
        assert_eq!(s.history().unwrap().len(), 3);
        assert_eq!(s.interrupted().unwrap(), None);
        assert_eq!(s.commit(&sample(40), &info("", 9)).unwrap().meta.number, 4);
        assert!(store(&fs).repairs().is_empty(), "repaired once");
    }
}

#[test]
fn a_current_pointer_to_a_tampered_generation_falls_back_and_keeps_its_files() {
    let fs = MemFs::new();
    three(&fs);
    put(&fs, "generations/000003.yaml", sample(99).as_bytes());
    let s = store(&fs);
    assert_eq!(s.load_current().unwrap().meta.number, 2);
    assert!(
        s.repairs()[0]
            .problem
            .contains("generation 3, which cannot be read"),
        "{:?}",
        s.repairs()
    );
    assert_eq!(
        fs.read(Path::new("/data/config/generation-000003.yaml.corrupt"))
            .unwrap(),
        sample(99).as_bytes()
    );
    // `applied` named the tampered generation 3, gone now: generation 2 is checked again at
    // start, with generation 1 to restore if that fails.
    assert_eq!(s.repairs()[1].file, Path::new("/data/config/applied"));
    assert_eq!(
        s.interrupted().unwrap(),
        Some(Interrupted {
            generation: 2,
            last_applied: 1
        })
    );
}

#[test]
fn no_intact_generation_left_means_an_empty_store() {
    let fs = MemFs::new();
    let s = store(&fs);
    s.commit(&sample(1), &info("", 1)).unwrap();
    put(&fs, "generations/000001.json", b"{");
    put(&fs, "current", b"{");
    let s = store(&fs);
    assert!(matches!(s.load_current(), Err(StoreError::Empty(_))));
    assert!(s.repairs()[0].action.contains("the store is empty"));
}

#[test]
fn an_unreadable_or_dangling_applied_pointer_makes_the_current_generation_unchecked() {
    for bad in [
        &b"garbage"[..],
        &b""[..],
        &br#"{"generation":9,"fingerprint":"00"}"#[..],
    ] {
        let fs = MemFs::new();
        three(&fs);
        put(&fs, "applied", bad);
        let s = store(&fs);
        assert_eq!(s.repairs().len(), 1);
        assert_eq!(s.repairs()[0].file, Path::new("/data/config/applied"));
        assert_eq!(s.applied().unwrap(), None);
        assert_eq!(
            s.interrupted().unwrap(),
            Some(Interrupted {
                generation: 3,
                last_applied: 2
            })
        );
        s.mark_applied(3).unwrap();
        assert_eq!(s.interrupted().unwrap(), None);
    }
}

#[test]
fn an_unreadable_pending_confirm_or_one_restoring_a_missing_generation_is_dropped() {
    for bad in [
        &b"{\"generation\":"[..],
        &b""[..],
        &br#"{"generation":3,"restore":8,"deadline_ms":5,"author":"a"}"#[..],
    ] {
        let fs = MemFs::new();
        three(&fs);
        put(&fs, "pending-confirm.json", bad);
        let s = store(&fs);
        assert_eq!(s.pending_confirm().unwrap(), None);
        let r = &s.repairs()[0];
        assert_eq!(r.file, Path::new("/data/config/pending-confirm.json"));
        assert!(r.action.contains("will not roll back by itself"), "{r}");
        assert_eq!(s.load_current().unwrap().meta.number, 3);
    }
    // A sound one stays.
    let fs = MemFs::new();
    let s = three(&fs);
    let p = PendingConfirm {
        generation: 3,
        restore: 2,
        deadline_ms: 5,
        author: "a".into(),
    };
    s.set_pending_confirm(&p).unwrap();
    let s = store(&fs);
    assert!(s.repairs().is_empty());
    assert_eq!(s.pending_confirm().unwrap(), Some(p));
}

/// A full disk at every write of a commit: a clear error naming ENOSPC and the file, and
/// the store exactly as before, in this process (no reopen) and after a reopen.
#[test]
fn a_full_disk_during_a_commit_leaves_the_store_as_it_was() {
    for room in 0..3 {
        let fs = MemFs::new();
        let s = three(&fs);
        let before: Vec<(PathBuf, Vec<u8>)> = fs
            .paths()
            .into_iter()
            .map(|p| (p.clone(), fs.read(&p).unwrap()))
            .collect();
        fs.fill_after(Some(room));
        let err = s.commit(&sample(50), &info("", 9)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("No space left on device"), "{msg}");
        let file = ["000004.yaml", "000004.json", "current"][room];
        assert!(msg.contains("failed to write /data/config/"), "{msg}");
        assert!(msg.contains(file), "room={room}: {msg}");
        let after: Vec<(PathBuf, Vec<u8>)> = fs
            .paths()
            .into_iter()
            .map(|p| (p.clone(), fs.read(&p).unwrap()))
            .collect();
        assert_eq!(after, before, "room={room}: the store changed");
        assert_eq!(s.history().unwrap().len(), 3);
        assert_eq!(s.load_current().unwrap().text, sample(3));
        fs.fill_after(None);
        assert_eq!(s.commit(&sample(50), &info("", 9)).unwrap().meta.number, 4);
    }
}
