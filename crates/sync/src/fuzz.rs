//! Fuzzing entry point of the sync protocol's receive path (`cargo xtask fuzz`, see
//! docs/testing.md): arbitrary bytes as what the peer sent on a sync connection, through the
//! frame decoder and a connected [`SyncCore`], with the invariants that must hold for any
//! input.
//!
//! Owns: [`frames`] and the test replaying the checked-in corpus (`fuzz/corpus/sync_frames/`)
//! on every `cargo test`.
//! Must not change behaviour: nothing here is called by the shell.

use std::time::{Duration, Instant};

use crate::proto::{self, GenRef, Message, Outcome};
use crate::{GenInfo, Identity, LocalView, Output, SyncCore};

/// Highest schema the fuzzed node reads; pushes of a newer schema must be refused.
const MAX_SCHEMA: u32 = 1;

fn gen_info(number: u64) -> GenInfo {
    GenInfo {
        generation: GenRef {
            number,
            fingerprint: format!("{number:032x}"),
        },
        schema_version: 1,
    }
}

/// Runs `data`, the bytes the peer `lb2` sent after the TLS handshake, as the shell does:
/// frame by frame (4-byte length, JSON message) into a connected core whose node `lb1` has
/// generations 1 and 2, until a frame is refused (the shell then closes the connection).
/// Applies the core asks for succeed; its timers run after each message.
///
/// Invariants: nothing panics; decoding all frames at once and in two reads gives the same
/// messages; every decoded message encodes to a frame that decodes to it again; the core only
/// applies a peer generation of a schema this firmware reads, numbered above the current one,
/// with the current generation it expects being the real one.
pub fn frames(data: &[u8]) {
    split_invariance(data);

    let id = Identity {
        node: "lb1".into(),
        peer: "lb2".into(),
        firmware: "0.1.0".into(),
        max_schema: MAX_SCHEMA,
    };
    let mut local = LocalView {
        history: vec![gen_info(1), gen_info(2)],
    };
    let mut core = SyncCore::new(id, local.clone());
    let mut now = Instant::now();
    core.handle_connected(now);
    drive(&mut core, &mut local, now);
    let mut rest = data;
    while let Some(header) = rest.first_chunk::<4>() {
        let Ok(len) = proto::frame_len(*header) else {
            core.handle_disconnected(now);
            break;
        };
        let Some(body) = rest[4..].get(..len) else {
            break;
        };
        rest = &rest[4 + len..];
        let msg = match proto::decode(body) {
            Ok(m) => m,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                core.handle_disconnected(now);
                break;
            }
        };
        round_trip(&msg);
        now += Duration::from_millis(700);
        core.handle_message(now, msg);
        drive(&mut core, &mut local, now);
        if let Some(at) = core.poll_timeout() {
            now = now.max(at);
            core.handle_timeout(now);
            drive(&mut core, &mut local, now);
        }
    }
    let _ = core.status();
}

/// Carries out the core's outputs as a shell whose applies succeed.
fn drive(core: &mut SyncCore, local: &mut LocalView, now: Instant) {
    while let Some(out) = core.poll_output() {
        if let Output::Apply {
            generation,
            expected_current,
        } = out
        {
            let current = local.current().map(|g| g.generation.clone());
            assert_eq!(expected_current, current, "apply expects another current");
            assert!(
                generation.schema_version <= MAX_SCHEMA,
                "applies a config of schema {} on a firmware reading {MAX_SCHEMA}",
                generation.schema_version
            );
            if let Some(c) = &current {
                assert!(
                    generation.generation.number > c.number,
                    "applies generation {} over {}",
                    generation.generation,
                    c
                );
            }
            local.history.push(GenInfo {
                generation: generation.generation.clone(),
                schema_version: generation.schema_version,
            });
            core.handle_local(now, local.clone());
            core.handle_apply_result(now, generation.generation, Outcome::Applied);
        }
    }
}

/// A decoded message encodes to one frame that decodes to it again.
fn round_trip(msg: &Message) {
    let frame = proto::encode(msg).expect("a decoded message encodes");
    let header = frame.first_chunk::<4>().expect("a frame has a header");
    assert_eq!(proto::frame_len(*header).ok(), Some(frame.len() - 4));
    let again = proto::decode(&frame[4..]).expect("an encoded message decodes");
    // Runtime state is opaque JSON: floats need not survive a text round trip bit for bit.
    if !matches!(msg, Message::Runtime { .. }) {
        assert_eq!(&again, msg, "the message changed in a round trip");
    }
}

/// [`proto::decode_frames`] gives the same messages for the whole input as for two reads.
fn split_invariance(data: &[u8]) {
    let whole = proto::decode_frames(&mut data.to_vec()).map_err(|e| e.to_string());
    let cut = data.len() / 2;
    let mut buf = data[..cut].to_vec();
    let pieces = proto::decode_frames(&mut buf).and_then(|mut first| {
        buf.extend_from_slice(&data[cut..]);
        first.extend(proto::decode_frames(&mut buf)?);
        Ok(first)
    });
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "frames depend on how reads split"),
        (Err(_), Err(_)) => {}
        _ => panic!("frames depend on how reads split: {whole:?} and {pieces:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `check` on every file of `fuzz/corpus/<target>/` (at least 10) and of
    /// `fuzz/regressions/<target>/` (the inputs of fixed crashes), naming the file that fails.
    fn replay(target: &str, check: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let files = |dir: &str| -> Vec<_> {
            let dir = fuzz.join(dir).join(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| rd.map(|e| e.expect("corpus entry").path()).collect())
                .unwrap_or_default();
            files.sort();
            files
        };
        let corpus = files("corpus");
        assert!(
            corpus.len() >= 10,
            "fuzz/corpus/{target}: {} files",
            corpus.len()
        );
        for file in corpus.iter().chain(&files("regressions")) {
            let data = std::fs::read(file).expect("corpus file");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{} breaks an invariant (message above)", file.display());
            }
        }
    }

    #[test]
    fn sync_frames_corpus_replays() {
        replay("sync_frames", super::frames);
    }
}
